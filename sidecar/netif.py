"""Interface facts through ioctl (works in any network namespace, no /sys needed)."""

from __future__ import annotations

import fcntl
import socket
import struct
from dataclasses import dataclass

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
