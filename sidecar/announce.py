"""Telling the link that a VIP has moved: ucarp's gratuitous ARP for an IPv4 VIP, an
unsolicited neighbour advertisement (the IPv6 gratuitous ARP, carp6.encode_na) for an
IPv6 one. The one sender for both the daemon (a VIP without an announcing provider) and
the alias provider.

One long-lived socket per interface and family: opening and closing one per burst cost
milliseconds each on the event loop. A socket is opened again when its interface was
re-created (a new index).
"""

from __future__ import annotations

import socket
from ipaddress import IPv6Address
from pathlib import Path

from vip_sidecar import carp, carp6
from vip_sidecar.inet import IPAddress


def what(addr: IPAddress) -> str:
    """The announcement's name in log lines."""
    return "neighbour advertisement" if addr.version == 6 else "gratuitous ARP"


class Announcer:
    def __init__(self) -> None:
        self._sockets: dict[tuple[str, int], tuple[int, socket.socket]] = {}

    def send(self, interface: str, addr: IPAddress, mac: bytes) -> None:
        """One announcement of `addr` at `mac` on `interface` (OSError on failure)."""
        index = socket.if_nametoindex(interface)
        sock = self._socket(interface, index, addr.version)
        if isinstance(addr, IPv6Address):
            na = carp6.encode_na(addr, mac, router=_forwarding(interface))
            sock.sendto(na, (str(carp6.ALL_NODES), 0, 0, index))
        else:
            sock.send(carp.encode_garp(mac, addr))

    def _socket(self, interface: str, index: int, version: int) -> socket.socket:
        entry = self._sockets.get((interface, version))
        if entry is None or entry[0] != index:
            if entry is not None:
                entry[1].close()
            entry = (index, _open(interface, index, version))
            self._sockets[(interface, version)] = entry
        return entry[1]


def _open(interface: str, index: int, version: int) -> socket.socket:
    if version == 4:
        # the whole Ethernet frame: ucarp's GARP comes from the NIC's MAC to broadcast
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    else:
        # the kernel adds the ICMPv6 checksum and the link-local source; RFC 4861
        # receivers drop an NA whose hop limit is not 255
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        if version == 4:
            s.bind((interface, 0))
        else:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def _forwarding(interface: str) -> bool:
    """The NA's router flag, as the kernel's own NA sets it (`router = forwarding`): a
    router announcing R=0 would be dropped from its hosts' default router lists (RFC 4861
    7.2.5)."""
    try:
        return Path(f"/proc/sys/net/ipv6/conf/{interface}/forwarding").read_text().strip() == "1"
    except OSError:
        return False


ANNOUNCER = Announcer()
