"""CARP over IPv6 as the BSD kernels do it, and the unsolicited neighbour advertisement.

Pure functions, no sockets. The 36-byte header and the HMAC are carp.py's; what differs
is the framing (docs/ipv6.md cites the BSD lines):
- the kernel builds the IPv6 header: a raw AF_INET6 socket (transport6.py) reads only
  the payload, with the source, destination and hop limit from recvmsg();
- the checksum covers the 36 CARP bytes only, no pseudo-header (FreeBSD carp6_input:
  `in_cksum(m, sizeof(*ch))`), so it is verified here, never by the kernel;
- the hop limit must be 255 for multicast adverts; FreeBSD 14's carp_input_c checks it
  only `if (multicast && ttl != CARP_DFLTTL)`, so unicast (--peer) adverts may be routed.
"""

from __future__ import annotations

import struct
from ipaddress import IPv6Address

from vip_sidecar.carp import CARP_LEN, CARP_TTL, DropReason, Packet, decode_header
from vip_sidecar.inet import IPAddress

ND_NEIGHBOR_ADVERT = 136
ND_NA_FLAG_ROUTER = 0x80000000
ND_NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LINKADDR = 2
ALL_NODES = IPv6Address("ff02::1")


def decode(
    payload: bytes, src: IPv6Address, dst: IPv6Address, hop_limit: int
) -> Packet | DropReason:
    """The structural check of an IPv6 advert: at least the 36 CARP bytes (a shorter one
    is truncated: bogus_size, as for IPv4). Bytes after the header are ignored, like BSD."""
    if len(payload) < CARP_LEN:
        return DropReason.BOGUS_SIZE
    carp = bytes(payload[:CARP_LEN])
    return Packet(src=src, dst=dst, ttl=hop_limit, adv=decode_header(carp), checked_bytes=carp)


def hop_limit_ok(pkt: Packet, peers: tuple[IPAddress, ...]) -> bool:
    """255 is required of IPv4 adverts (ucarp) and of IPv6 multicast ones; an IPv6 VIP in
    unicast mode accepts any hop limit, as FreeBSD 14 does for a unicast carpaddr6."""
    if pkt.ttl == CARP_TTL:
        return True
    return pkt.dst.version == 6 and bool(peers)


def encode_na(target: IPv6Address, mac: bytes, *, router: bool = False) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 4.4) as FreeBSD's carp_send_na
    sends it: override set, solicited clear, the target link-layer address option. The
    kernel adds the ICMPv6 checksum. TLLA is the NIC's MAC, the address ucarp announces
    in its gratuitous ARP (the kernel CARP's virtual MAC does not exist here)."""
    flags = ND_NA_FLAG_OVERRIDE | (ND_NA_FLAG_ROUTER if router else 0)
    head = struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, flags) + target.packed
    return head + struct.pack("!BB6s", ND_OPT_TARGET_LINKADDR, 1, mac)
