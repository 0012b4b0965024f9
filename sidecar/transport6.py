"""The IPv6 advert socket of one interface (neighbour advertisements: announce.py).

One raw AF_INET6 socket for next header 112, bound to the interface. The
kernel builds the IPv6 header (hop limit 255 set for multicast and unicast alike) and
hands us only the payload; recvmsg() ancillary data carry the hop limit
(IPV6_RECVHOPLIMIT) and the destination (IPV6_RECVPKTINFO). IPV6_CHECKSUM is never set:
it would make the kernel add and verify a pseudo-header sum, which BSD's CARP checksum
does not have (docs/ipv6.md); carp6/speaker verify the plain sum themselves.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from vip_sidecar import carp, carp6

IPV6_TCLASS_CS7 = 56 << 2  # FreeBSD: net.inet.carp.dscp defaults to 56
# a cmsg with the socket's running count of packets dropped on a full queue, as it was
# when the packet carrying it was queued: drops show with the next packet that gets in
SO_RXQ_OVFL = 40
_INT = struct.Struct("@i")
_U32 = struct.Struct("@I")
_PKTINFO = struct.Struct("@16sI")  # struct in6_pktinfo {in6_addr; unsigned ifindex}
_CMSG_SPACE = socket.CMSG_SPACE(_INT.size) + socket.CMSG_SPACE(_PKTINFO.size) + (
    socket.CMSG_SPACE(_U32.size)
)


@dataclass(frozen=True, slots=True)
class Received6:
    data: bytes
    src: IPv6Address
    dst: IPv6Address
    hop_limit: int

    @property
    def incoming(self) -> bool:
        return True  # IPV6_MULTICAST_LOOP 0: our own adverts never come back

    def decode(self) -> carp.Packet | carp.DropReason:
        return carp6.decode(self.data, self.src, self.dst, self.hop_limit)


class Inet6Socket:
    def __init__(self, ifname: str, ifindex: int, rcvbuf: int) -> None:
        self.ifindex = ifindex
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, carp.PROTO_CARP)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
            for opt, value in (
                (socket.IPV6_MULTICAST_HOPS, carp.CARP_TTL),
                (socket.IPV6_UNICAST_HOPS, carp.CARP_TTL),
                (socket.IPV6_MULTICAST_IF, ifindex),
                (socket.IPV6_MULTICAST_LOOP, 0),
                (socket.IPV6_RECVHOPLIMIT, 1),
                (socket.IPV6_RECVPKTINFO, 1),
                (socket.IPV6_TCLASS, IPV6_TCLASS_CS7),
            ):
                s.setsockopt(socket.IPPROTO_IPV6, opt, value)
            s.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.setblocking(False)
        except OSError:
            s.close()
            raise
        self.sock = s
        self._dropped = 0  # SO_RXQ_OVFL's last running count
        self._unread_drops = 0
        self._groups: set[IPv6Address] = set()

    def fileno(self) -> int:
        return self.sock.fileno()

    def join(self, group: IPv6Address) -> None:
        """MLD membership on this interface only (the kernel's ipv6_mreq)."""
        if group not in self._groups:
            mreq = group.packed + _U32.pack(self.ifindex)
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            self._groups.add(group)

    def send(self, payload: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """From srcip (IPV6_PKTINFO also pins the interface, so a link-local source or
        destination needs no zone in the address)."""
        info = _PKTINFO.pack(src.packed, self.ifindex)
        cmsg = [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, info)]
        self.sock.sendmsg([payload], cmsg, 0, (str(dst), 0, 0, self.ifindex))

    def receive(self, limit: int) -> list[Received6]:
        out: list[Received6] = []
        for _ in range(limit):
            try:
                data, ancdata, _, addr = self.sock.recvmsg(carp.CARP_LEN + 64, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                break
            hop_limit, dst = -1, IPv6Address(0)
            for level, kind, raw in ancdata:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                    hop_limit = _INT.unpack_from(raw)[0]
                elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                    dst = IPv6Address(_PKTINFO.unpack_from(raw)[0])
                elif level == socket.SOL_SOCKET and kind == SO_RXQ_OVFL:
                    total = _U32.unpack_from(raw)[0]
                    self._unread_drops += (total - self._dropped) & 0xFFFFFFFF
                    self._dropped = total
            src = IPv6Address(str(addr[0]).split("%", 1)[0])  # a link-local one has a zone
            out.append(Received6(data, src, dst, hop_limit))
        return out

    def take_kernel_drops(self) -> int:
        n, self._unread_drops = self._unread_drops, 0
        return n

    def close(self) -> None:
        self.sock.close()
