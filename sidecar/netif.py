"""Interface facts through ioctl (works in any network namespace, no /sys needed)."""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

SIOCGIFFLAGS = 0x8913
SIOCGIFHWADDR = 0x8927
IFF_UP = 0x1
IFF_RUNNING = 0x40
ARPHRD_ETHER = 1


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


def link_state(name: str) -> LinkState:
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


class _Sockaddr(ctypes.Structure):
    _fields_ = (("family", ctypes.c_ushort), ("data", ctypes.c_ubyte * 14))


class _Ifaddrs(ctypes.Structure):
    pass


_Ifaddrs._fields_ = (
    ("next", ctypes.POINTER(_Ifaddrs)),
    ("name", ctypes.c_char_p),
    ("flags", ctypes.c_uint),
    ("addr", ctypes.POINTER(_Sockaddr)),
    ("netmask", ctypes.POINTER(_Sockaddr)),
    ("ifu", ctypes.POINTER(_Sockaddr)),
    ("data", ctypes.c_void_p),
)
_libc = ctypes.CDLL(None, use_errno=True)


def ipv4_addresses(name: str) -> set[IPv4Address]:
    """Every IPv4 address configured on an interface (labels `eth0:1` included), from
    getifaddrs(3): what ucarp checks -s against, without a netlink library."""
    head = ctypes.POINTER(_Ifaddrs)()
    if _libc.getifaddrs(ctypes.byref(head)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    found: set[IPv4Address] = set()
    try:
        node = head
        while node:
            ifa = node.contents
            label = (ifa.name or b"").decode(errors="replace")
            if (label == name or label.startswith(name + ":")) and ifa.addr:
                sa = ifa.addr.contents
                if sa.family == socket.AF_INET:
                    found.add(IPv4Address(bytes(sa.data[2:6])))
            node = ifa.next
    finally:
        _libc.freeifaddrs(head)
    return found
