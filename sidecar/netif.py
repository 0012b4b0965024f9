"""Interface facts through ioctl and raw netlink: address dump, add and delete (they
work in any network namespace, no /sys needed). Link states, indexes and the address
table are cached until the kernel announces a change (_Watch)."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass, field
from ipaddress import ip_address

from vip_sidecar.inet import IPAddress

SIOCGIFFLAGS = 0x8913
NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_GETADDR = 22
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
RTM_DELADDR = 21
NLMSG_ERROR = 2
NLMSG_DONE = 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
IFA_F_NODAD = 0x02
IFA_F_DADFAILED = 0x08
IFA_F_TENTATIVE = 0x40
_UNUSABLE6 = IFA_F_TENTATIVE | IFA_F_DADFAILED
_ADDR_LEN = {socket.AF_INET: 4, socket.AF_INET6: 16}
NLMSG_HDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFF_RUNNING = 0x40
ARPHRD_ETHER = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


@dataclass(frozen=True)
class LinkState:
    exists: bool
    up: bool = False
    running: bool = False

    @property
    def carrier(self) -> bool:
        return self.exists and self.up and self.running


def _ifreq(name: str) -> bytes:
    return struct.pack("16s24x", name.encode())


@dataclass
class _Watch:
    """Interface facts kept until the kernel says they changed.

    The housekeeping round asks every second for the carrier, the ifindex and the
    addresses of each interface, and the alias provider for its address: read afresh,
    that created and closed four sockets and dumped every address each second, the
    largest part of an idle daemon's CPU (docs/reliability.md). Here one netlink socket
    joined to the link and address notification groups is read (non-blocking, usually
    empty) before answering from the cache; any notification, a lost one (ENOBUFS) or
    no socket at all empties the cache. The kernel queues the notification of a change
    before the request that made it returns, so an answer is never older than the last
    change made before the question."""

    sock: socket.socket | None = None
    subscribed: bool = False
    links: dict[str, LinkState] = field(default_factory=dict)
    indexes: dict[str, int] = field(default_factory=dict)
    table: dict[int, frozenset[str]] | None = None
    parsed: dict[int, frozenset[IPAddress]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fresh(self) -> None:
        """Forget whatever changed since the last call (call with the lock held)."""
        if not self.subscribed:  # first use, or a forked child: its own socket
            self.forget()
            self.sock = _subscribe()
            self.subscribed = True
            return
        if self.sock is None:
            self.forget()
            return
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            except OSError as exc:
                self.forget()
                if exc.errno == errno.ENOBUFS:  # notifications were lost: read again
                    continue
                self.sock.close()  # unusable: answer afresh from now on
                self.sock = None
                return
            if data:
                self.forget()

    def forget(self) -> None:
        self.links.clear()
        self.indexes.clear()
        self.table = None
        self.parsed.clear()


def _subscribe() -> socket.socket | None:
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, NETLINK_ROUTE)
    except OSError:
        return None
    try:
        s.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    except OSError:
        s.close()
        return None
    return s


_WATCH = _Watch()


def _after_fork() -> None:
    # the parent's socket hears the same notifications; a child reads its own
    global _WATCH
    if _WATCH.sock is not None:
        _WATCH.sock.close()
    _WATCH = _Watch()


os.register_at_fork(after_in_child=_after_fork)


def link_state(name: str) -> LinkState:
    with _WATCH.lock:
        _WATCH.fresh()
        state = _WATCH.links.get(name)
        if state is None:
            state = _WATCH.links[name] = _read_link_state(name)
        return state


def ifindex(name: str) -> int:
    """socket.if_nametoindex, cached (raises OSError when the interface does not exist)."""
    with _WATCH.lock:
        _WATCH.fresh()
        index = _WATCH.indexes.get(name)
        if index is None:
            index = _WATCH.indexes[name] = socket.if_nametoindex(name)
        return index


def _read_link_state(name: str) -> LinkState:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, _ifreq(name))
        except OSError:
            return LinkState(exists=False)
    flags = struct.unpack_from("H", res, 16)[0]
    return LinkState(exists=True, up=bool(flags & IFF_UP), running=bool(flags & IFF_RUNNING))


def hardware_address(name: str) -> tuple[int, bytes]:
    """(ARPHRD type, 6-byte MAC) of an interface; raises OSError when it does not exist."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        res = fcntl.ioctl(s.fileno(), SIOCGIFHWADDR, _ifreq(name))
    family = struct.unpack_from("H", res, 16)[0]
    return family, bytes(res[18:24])


def format_mac(mac: bytes) -> str:
    return ":".join(f"{b:02x}" for b in mac)


def addresses(name: str) -> set[IPAddress]:
    """Every usable IPv4 and IPv6 address configured on an interface (labels `eth0:1`
    included: they share the index): what ucarp checks -s against. From the cached
    netlink address dump (getifaddrs(3) also dumps every link with its statistics, and
    was once the largest item of the idle daemon's CPU)."""
    index = ifindex(name)
    table = address_table()
    with _WATCH.lock:
        parsed = _WATCH.parsed.get(index)
        if parsed is None or _WATCH.table is not table:
            parsed = frozenset(ip_address(a) for a in table.get(index, ()))
            if _WATCH.table is table:
                _WATCH.parsed[index] = parsed
    return set(parsed)


def address_table(timeout: float = 1.0) -> dict[int, frozenset[str]]:
    """Every IPv4 and IPv6 address of every interface by index, as text (IPv6
    compressed): one RTM_GETADDR dump on a plain netlink socket, kept until the kernel
    announces a change (_Watch). Callers must not modify it."""
    with _WATCH.lock:
        _WATCH.fresh()
        if _WATCH.table is None:
            _WATCH.table = _dump_addresses(timeout)
        return _WATCH.table


def _dump_addresses(timeout: float) -> dict[int, frozenset[str]]:
    # pyroute2's asyncio client cost ~3 ms of set-up per dump
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        body = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        flags = NLM_F_REQUEST | NLM_F_DUMP
        s.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), RTM_GETADDR, flags, 1, 0) + body)
        found: dict[int, set[str]] = {}
        while True:
            if parse_addr_dump(s.recv(65536), found):
                return {index: frozenset(addrs) for index, addrs in found.items()}


def parse_addr_dump(data: bytes, found: dict[int, set[str]]) -> bool:
    """Add the addresses of one netlink datagram to `found`; True at the end of the dump.
    A truncated or malformed datagram ends the dump (raises OSError on a netlink error).
    IPv6 addresses still in DAD (tentative) or that failed it are left out: the kernel
    neither sends from nor answers for them, so they do not count as configured."""
    off = 0
    while off + NLMSG_HDR.size <= len(data):
        length, kind, _, _, _ = NLMSG_HDR.unpack_from(data, off)
        if length < NLMSG_HDR.size or off + length > len(data):
            return True
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            code = struct.unpack_from("=i", data, off + NLMSG_HDR.size)[0]
            if code:
                raise OSError(-code, f"netlink address dump failed: errno {-code}")
            return True
        if kind == RTM_NEWADDR and length >= NLMSG_HDR.size + IFADDRMSG.size:
            family, _, hflags, _, index = IFADDRMSG.unpack_from(data, off + NLMSG_HDR.size)
            attrs: dict[int, bytes] = {}
            a = off + NLMSG_HDR.size + IFADDRMSG.size
            while a + RTATTR.size <= off + length:
                alen, atype = RTATTR.unpack_from(data, a)
                if alen < RTATTR.size:
                    break
                attrs[atype] = data[a + RTATTR.size : a + alen]
                a += (alen + 3) & ~3
            # IFA_LOCAL is the address itself; IFA_ADDRESS the peer on point-to-point links
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            aflags = attrs.get(IFA_FLAGS)
            flags = struct.unpack("=I", aflags)[0] if aflags and len(aflags) == 4 else hflags
            unusable = family == socket.AF_INET6 and flags & _UNUSABLE6
            if raw is not None and _ADDR_LEN.get(family) == len(raw) and not unusable:
                found.setdefault(index, set()).add(socket.inet_ntop(family, raw))
        off += (length + 3) & ~3
    return False


# "already there" / "already gone": the state asked for
_UNCHANGED = {errno.EEXIST, errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT}


def change_address(
    command: str, index: int, address: IPAddress, prefixlen: int, timeout: float = 1.0
) -> bool:
    """`ip addr add|del ADDRESS/PREFIXLEN dev INDEX` as one netlink request: True if the
    address was added or removed, False if it already was (or was not) there; OSError on
    any other refusal. Replaces pyroute2 in the alias provider: importing it cost 0.6 s
    on the first transition, which delayed a take-over and a restarted node's clean-up.
    An IPv6 address is added `nodad` (IFA_F_NODAD in IFA_FLAGS, as pyroute2 and iproute2
    send it): a tentative address can be neither used nor announced for about a second,
    and a DAD probe racing the old master's copy would mark it dadfailed for good."""
    kind = {"add": RTM_NEWADDR, "del": RTM_DELADDR}[command]
    flags = NLM_F_REQUEST | NLM_F_ACK | (NLM_F_CREATE | NLM_F_EXCL if command == "add" else 0)
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    raw = address.packed
    attrs = b"".join(
        RTATTR.pack(RTATTR.size + len(raw), kind_) + raw for kind_ in (IFA_LOCAL, IFA_ADDRESS)
    )
    if family == socket.AF_INET6 and command == "add":
        attrs += RTATTR.pack(RTATTR.size + 4, IFA_FLAGS) + struct.pack("=I", IFA_F_NODAD)
    body = IFADDRMSG.pack(family, prefixlen, 0, 0, index) + attrs
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as s:
        s.settimeout(timeout)
        s.bind((0, 0))
        s.send(NLMSG_HDR.pack(NLMSG_HDR.size + len(body), kind, flags, 1, 0) + body)
        while True:
            data = s.recv(65536)
            off = 0
            while off + NLMSG_HDR.size + 4 <= len(data):
                length, mtype, _, _, _ = NLMSG_HDR.unpack_from(data, off)
                if mtype == NLMSG_ERROR:
                    code = -struct.unpack_from("=i", data, off + NLMSG_HDR.size)[0]
                    if code == 0:
                        return True
                    if code in _UNCHANGED:
                        return False
                    raise OSError(code, f"{command} {address}/{prefixlen}: {os.strerror(code)}")
                if length < NLMSG_HDR.size:
                    break
                off += (length + 3) & ~3
