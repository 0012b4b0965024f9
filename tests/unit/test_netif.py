"""The raw netlink IPv4 address dump of vip_sidecar.netif (the alias provider's drift check)."""

import socket
import struct

import pytest

from vip_sidecar import netif


def rtattr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def newaddr(index: int, *attrs: bytes, family: int = socket.AF_INET) -> bytes:
    body = netif.IFADDRMSG.pack(family, 24, 0, 0, index) + b"".join(attrs)
    return netif.NLMSG_HDR.pack(16 + len(body), netif.RTM_NEWADDR, 2, 1, 0) + body


def done() -> bytes:
    return netif.NLMSG_HDR.pack(20, netif.NLMSG_DONE, 2, 1, 0) + b"\0" * 4


def addr(kind: int, text: str) -> bytes:
    return rtattr(kind, socket.inet_aton(text))


def test_parses_addresses_by_index_until_done():
    found: dict[int, set[str]] = {}
    data = (
        newaddr(2, addr(netif.IFA_ADDRESS, "10.0.0.2"), addr(netif.IFA_LOCAL, "10.0.0.2"))
        + newaddr(2, addr(netif.IFA_ADDRESS, "10.0.0.100"))
        # point-to-point: IFA_ADDRESS is the peer, IFA_LOCAL ours
        + newaddr(3, addr(netif.IFA_ADDRESS, "192.0.2.1"), addr(netif.IFA_LOCAL, "192.0.2.9"))
        + newaddr(4, rtattr(netif.IFA_ADDRESS, b"\x20\x01" + b"\0" * 14), family=socket.AF_INET6)
    )
    assert netif.parse_addr_dump(data, found) is False  # more datagrams follow
    assert netif.parse_addr_dump(done(), found) is True
    assert found == {2: {"10.0.0.2", "10.0.0.100"}, 3: {"192.0.2.9"}}


def test_truncated_datagram_ends_the_dump_without_raising():
    found: dict[int, set[str]] = {}
    msg = newaddr(2, addr(netif.IFA_LOCAL, "10.0.0.2"))
    assert netif.parse_addr_dump(msg[:-6], found) is True
    assert found == {}


def test_netlink_error_is_an_oserror():
    err = netif.NLMSG_HDR.pack(36, netif.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(OSError, match="errno 1"):
        netif.parse_addr_dump(err, {})


def test_live_dump_sees_loopback():
    by_index = netif.address_table()
    assert "127.0.0.1" in by_index.get(socket.if_nametoindex("lo"), frozenset())


def test_ipv4_addresses_of_one_interface_by_name():
    assert "127.0.0.1" in {str(a) for a in netif.ipv4_addresses("lo")}
    with pytest.raises(OSError):
        netif.ipv4_addresses("no-such-if0")
