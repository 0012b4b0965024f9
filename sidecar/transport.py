"""Raw IP-protocol-112 sockets for one interface.

Receive: an AF_PACKET datagram socket (IP packets without the link header) with a
classic BPF filter for protocol 112. Unlike a raw IP socket it also sees packets with a
bad IP checksum and broadcast-MAC (--nomcast) frames for a group we did not join, so
every one of ucarp's receive checks can be done, and counted, in user space.

Send: multicast/broadcast adverts and gratuitous ARPs are whole Ethernet frames written
on an AF_PACKET socket (ucarp's exact frame, source MAC 00:00:5e:00:00:<vhid>); unicast
adverts to --peer addresses go through a raw IP socket so the kernel routes them and
resolves the next hop, which is what clouds without multicast need.

IPv6: a raw AF_INET6 socket of its own (transport6.py), opened with the others; a host
without IPv6 still runs IPv4 VIPs, and an IPv6 VIP there is refused in one line.
"""

from __future__ import annotations

import ctypes
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vip_sidecar import announce, carp, netif
from vip_sidecar.carp import BROADCAST_MAC, PROTO_CARP, encode_ethernet, group_mac, virtual_mac
from vip_sidecar.inet import IPAddress
from vip_sidecar.transport6 import Inet6Socket, Received6

ETH_P_IP = 0x0800
SO_ATTACH_FILTER = 26
PACKET_OUTGOING = 4
MAX_PACKET = 1500
SOL_PACKET = 263
PACKET_STATISTICS = 6  # struct tpacket_stats {tp_packets, tp_drops}, reset on read
SO_RCVBUFFORCE = 33
# Receive buffer, asked for on purpose rather than inherited from rmem_default (208 KiB):
# 1 MiB (the kernel doubles it) holds about 2,700 small CARP frames, e.g. 255 VIPs x 10
# peers' adverts arriving while the event loop is busy for a second, or 100 ms of a
# 27k packets/s flood. Beyond that the kernel drops, and the drops are counted
# (kernel_rcvbuf): a larger buffer would only delay, not absorb, a longer flood.
RCVBUF_BYTES = 1 << 20


class TransportError(RuntimeError):
    pass


def _bpf_carp_only() -> bytes:
    """ldb [9]; jeq #112 → accept, else drop. Offsets are from the IP header."""
    insns = [
        (0x30, 0, 0, 9),  # BPF_LD|BPF_B|BPF_ABS  k=9 (IP protocol)
        (0x15, 0, 1, PROTO_CARP),  # BPF_JMP|BPF_JEQ|BPF_K
        (0x06, 0, 0, 0xFFFF),  # BPF_RET|BPF_K accept
        (0x06, 0, 0, 0),  # BPF_RET|BPF_K drop
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


_BPF_PROGRAM = _bpf_carp_only()


def _attach_filter(sock: socket.socket) -> None:
    buf = ctypes.create_string_buffer(_BPF_PROGRAM)
    fprog = struct.pack("HL", len(_BPF_PROGRAM) // 8, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def _size_receive_buffer(sock: socket.socket) -> int:
    """RCVBUF_BYTES whatever net.core.rmem_max says when CAP_NET_ADMIN allows it
    (SO_RCVBUFFORCE), else as much of it as rmem_max grants. Returns the kernel's size."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


@dataclass(frozen=True, slots=True)
class Received:
    data: bytes
    incoming: bool

    def decode(self) -> carp.Packet | carp.DropReason:
        return carp.decode_ip(self.data)


class InterfaceTransport:
    def __init__(self, ifname: str) -> None:
        self.ifname = ifname
        try:
            self.ifindex = socket.if_nametoindex(ifname)
            hwtype, self.mac = netif.hardware_address(ifname)
        except OSError as exc:
            raise TransportError(f"interface {ifname}: {exc.strerror or exc}") from None
        self.ethernet = hwtype == netif.ARPHRD_ETHER
        try:
            # protocol 0 until the filter is on, so nothing unfiltered gets queued
            self.rx = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
            _attach_filter(self.rx)
            self.rcvbuf = _size_receive_buffer(self.rx)
            self.rx.bind((ifname, ETH_P_IP))
            self.rx.setblocking(False)
            self.tx_l2 = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
            self.tx_l2.bind((ifname, 0))
            self.tx_l2.setblocking(False)
            self.tx_ip = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            self.tx_ip.setblocking(False)
        except PermissionError:
            raise TransportError(
                f"interface {ifname}: raw sockets need CAP_NET_RAW (run as root or grant it)"
            ) from None
        except OSError as exc:
            raise TransportError(f"interface {ifname}: {exc.strerror or exc}") from None
        self._memberships: dict[IPv4Address, socket.socket] = {}
        self.v6: Inet6Socket | None = None
        self._v6_error = ""
        try:
            self.v6 = Inet6Socket(ifname, self.ifindex, RCVBUF_BYTES)
        except OSError as exc:  # IPv6 disabled in this kernel: IPv4 VIPs still work
            self._v6_error = exc.strerror or str(exc)

    def fileno(self) -> int:
        return self.rx.fileno()

    def filenos(self) -> list[int]:
        """Every socket the event loop must watch (IPv4 packets, IPv6 adverts)."""
        return [self.rx.fileno()] + ([self.v6.fileno()] if self.v6 is not None else [])

    def require(self, ip: IPAddress) -> None:
        """Refuse, in one line, a VIP whose family this interface cannot speak."""
        if ip.version == 6 and self.v6 is None:
            raise TransportError(f"interface {self.ifname}: no IPv6 socket: {self._v6_error}")

    def join(self, group: IPAddress) -> None:
        """IGMP (MLD for IPv6) membership so that snooping switches forward the group."""
        if isinstance(group, IPv6Address):
            self.require(group)
            assert self.v6 is not None
            try:
                self.v6.join(group)
            except OSError as exc:
                raise TransportError(
                    f"Can't do IPV6_JOIN_GROUP {group} on {self.ifname}: {exc.strerror}"
                ) from None
            return
        if group in self._memberships:
            return
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        mreqn = group.packed + b"\0\0\0\0" + struct.pack("i", self.ifindex)
        try:
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
        except OSError as exc:
            s.close()
            raise TransportError(
                f"Can't do IP_ADD_MEMBERSHIP {group} on {self.ifname}: {exc.strerror}"
            ) from None
        self._memberships[group] = s

    def receive(self, limit: int = 64) -> list[Received | Received6]:
        out: list[Received | Received6] = []
        if self.v6 is not None:
            out.extend(self.v6.receive(limit))
        for _ in range(limit):
            try:
                data, addr = self.rx.recvfrom(MAX_PACKET)
            except (BlockingIOError, InterruptedError):
                break
            out.append(Received(data, addr[2] != PACKET_OUTGOING))
        return out

    def take_kernel_drops(self) -> int:
        """Packets the kernel dropped since the last call because the receive buffer was
        full (PACKET_STATISTICS resets on read; this socket has one reader: us)."""
        v6 = self.v6.take_kernel_drops() if self.v6 is not None else 0
        try:
            raw = self.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return v6
        return int(struct.unpack("II", raw)[1]) + v6

    def send_multicast(
        self, packet: bytes, vhid: int, group: IPv4Address, *, broadcast: bool, real_mac: bool
    ) -> None:
        if not self.ethernet:
            self.send_unicast(packet, group)
            return
        dst = BROADCAST_MAC if broadcast else group_mac(group)
        src = self.mac if real_mac else virtual_mac(vhid)
        self.tx_l2.send(encode_ethernet(packet, dst, src, ETH_P_IP))

    def send_unicast(self, packet: bytes, dst: IPv4Address) -> None:
        self.tx_ip.sendto(packet, (str(dst), 0))

    def send_ipv6(self, payload: bytes, src: IPv6Address, dst: IPv6Address) -> None:
        """An IPv6 advert (the bare CARP header) to the group or a unicast peer."""
        if self.v6 is None:
            raise OSError(f"no IPv6 socket on {self.ifname}")
        self.v6.send(payload, src, dst)

    def announce(self, addr: IPAddress) -> None:
        """A gratuitous ARP (IPv4) or unsolicited neighbour advert (IPv6) for `addr` at
        this interface's MAC, through the sender the alias provider uses too."""
        announce.ANNOUNCER.send(self.ifname, addr, self.mac)

    def close(self) -> None:
        for s in (self.rx, self.tx_l2, self.tx_ip, *self._memberships.values()):
            s.close()
        if self.v6 is not None:
            self.v6.close()
        self._memberships.clear()
