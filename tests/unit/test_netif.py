"""vip_sidecar.netif's raw netlink IPv4/IPv6 address dump (the alias provider's drift
check, the srcip presence check)."""

import socket
import struct

import pytest

from vip_sidecar import netif


def rtattr(kind: int, payload: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def newaddr(index: int, *attrs: bytes, family: int = socket.AF_INET, flags: int = 0) -> bytes:
    body = netif.IFADDRMSG.pack(family, 24, flags, 0, index) + b"".join(attrs)
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
    assert found == {2: {"10.0.0.2", "10.0.0.100"}, 3: {"192.0.2.9"}, 4: {"2001::"}}


def test_ipv6_addresses_in_dad_or_failed_dad_are_not_usable():
    def v6(text: str) -> bytes:
        return rtattr(netif.IFA_ADDRESS, socket.inet_pton(socket.AF_INET6, text))

    flags32 = struct.pack("=I", netif.IFA_F_TENTATIVE)
    data = (
        newaddr(5, v6("fd00::1"), family=socket.AF_INET6)
        + newaddr(5, v6("fd00::2"), family=socket.AF_INET6, flags=netif.IFA_F_TENTATIVE)
        + newaddr(5, v6("fd00::3"), family=socket.AF_INET6, flags=netif.IFA_F_DADFAILED)
        # the kernel's full flags travel in IFA_FLAGS and win over the 8-bit header field
        + newaddr(5, v6("fd00::4"), rtattr(netif.IFA_FLAGS, flags32), family=socket.AF_INET6)
        # an IPv4 address is never tentative: the same bit means nothing there
        + newaddr(5, addr(netif.IFA_LOCAL, "10.0.0.5"), flags=netif.IFA_F_TENTATIVE)
        + done()
    )
    found: dict[int, set[str]] = {}
    assert netif.parse_addr_dump(data, found) is True
    assert found == {5: {"fd00::1", "10.0.0.5"}}


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


def test_addresses_of_one_interface_by_name():
    assert {"127.0.0.1", "::1"} <= {str(a) for a in netif.addresses("lo")}
    with pytest.raises(OSError):
        netif.addresses("no-such-if0")
