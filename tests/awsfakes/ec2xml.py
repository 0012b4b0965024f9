"""The EC2 XML that the fault wrapper (moto_server) reads and rewrites: which elements
make up each aspect of a described resource, and the filters moto lacks or gets wrong,
evaluated here on the wire (secondary IPv4 addresses; IPv6 addresses, whose filter moto
does not implement at all)."""

from __future__ import annotations

from ipaddress import ip_address
from xml.etree import ElementTree as ET

NS = "http://ec2.amazonaws.com/doc/2016-11-15/"
ET.register_namespace("", NS)
# per describe: (item set, id element, {aspect: element names that make it up})
ITEMS: dict[str, tuple[str, str, dict[str, tuple[str, ...]]]] = {
    "DescribeNetworkInterfaces": ("networkInterfaceSet", "networkInterfaceId",
                                  {"addresses": ("privateIpAddressesSet", "ipv6AddressesSet"),
                                   "tags": ("tagSet",)}),
    "DescribeAddresses": ("addressesSet", "allocationId",
                          {"assoc": ("instanceId", "associationId", "networkInterfaceId",
                                     "networkInterfaceOwnerId", "privateIpAddress"),
                           "tags": ("tagSet",)}),
    "DescribeRouteTables": ("routeTableSet", "routeTableId",
                            {"routes": ("routeSet",), "tags": ("tagSet",)}),
}
DESCRIBE_OF = {"eni": "DescribeNetworkInterfaces", "eipalloc": "DescribeAddresses",
               "rtb": "DescribeRouteTables"}
ID_PARAM = {"DescribeNetworkInterfaces": "NetworkInterfaceId",
            "DescribeAddresses": "AllocationId", "DescribeRouteTables": "RouteTableId"}
IPV6_FILTER = "ipv6-addresses.ipv6-address"
WIRE_FILTERS = ("addresses.private-ip-address", IPV6_FILTER, "tag-key")


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def child(node: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in node if local(c.tag) == name), None)


def items(root: ET.Element, describe: str) -> list[ET.Element]:
    set_name = ITEMS[describe][0]
    found = next((n for n in root.iter() if local(n.tag) == set_name), None)
    return [] if found is None else [c for c in found if local(c.tag) == "item"]


def item_id(item: ET.Element, describe: str) -> str:
    node = child(item, ITEMS[describe][1])
    return (node.text or "") if node is not None else ""


def canonical(text: str) -> str:
    try:
        return str(ip_address(text.strip()))
    except ValueError:
        return text


def _texts(item: ET.Element, set_name: str, leaf: str) -> set[str]:
    found = child(item, set_name)
    out = set()
    for entry in found if found is not None else []:
        node = child(entry, leaf)
        if node is not None and node.text:
            out.add(canonical(node.text))
    return out


def addresses(item: ET.Element, version: int) -> set[str]:
    """An ENI item's IPv4 (primary and secondary) or IPv6 addresses, canonical."""
    if version == 4:
        return _texts(item, "privateIpAddressesSet", "privateIpAddress")
    return _texts(item, "ipv6AddressesSet", "ipv6Address")


def matches(item: ET.Element, name: str, values: list[str]) -> bool:
    """One DescribeNetworkInterfaces filter of WIRE_FILTERS, as EC2 evaluates it."""
    if name == "addresses.private-ip-address":
        return bool(addresses(item, 4) & set(values))
    if name == IPV6_FILTER:
        return bool(addresses(item, 6) & {canonical(v) for v in values})
    keys = set()
    for tag in child(item, "tagSet") or []:
        key = child(tag, "key")
        keys.add((key.text or "") if key is not None else "")
    return bool(keys & set(values))
