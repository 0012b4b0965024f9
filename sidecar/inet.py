"""The two address families a VIP can have, and what differs between them.

One VIP entry is one family: its VIP, srcip, peers and group are all IPv4 or all IPv6
(config.py checks it). A dual-stack service is two VIPs with two vhids in one process.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import TypeAlias

IPAddress: TypeAlias = IPv4Address | IPv6Address

# the CARP groups: ucarp's and the BSD kernels' IPv4 default, and the BSD kernels' IPv6
# default (FreeBSD carp_alloc: ff02::12, the link-local scope of the VRRP group)
DEFAULT_GROUP4 = IPv4Address("224.0.0.18")
DEFAULT_GROUP6 = IPv6Address("ff02::12")


def family(ip: IPAddress) -> str:
    """'ipv4' or 'ipv6': the word /status, the metrics and the errors use."""
    return "ipv6" if ip.version == 6 else "ipv4"


def default_group(ip: IPAddress) -> IPAddress:
    return DEFAULT_GROUP6 if ip.version == 6 else DEFAULT_GROUP4
