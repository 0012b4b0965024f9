"""The CARP advertisement wire codec, byte-compatible with ucarp 1.5.2.

Pure functions only: no sockets, no clocks. Layout and the exact HMAC input
are those of ucarp 1.5.2 (src/carp.c, src/ip_carp.h); tests/unit/test_carp_vectors.py
checks them byte for byte against known-good vectors. The 36-byte header and the HMAC
serve IPv6 unchanged (FreeBSD ip_carp.c, docs/ipv6.md); the IPv6 framing is carp6.py.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Address

from vip_sidecar.inet import IPAddress

PROTO_CARP = 112
CARP_VERSION = 2
CARP_TYPE_ADVERTISEMENT = 1
CARP_AUTHLEN = 7  # (8 counter bytes + 20 digest bytes) / 4
CARP_LEN = 36
IP_HEADER_LEN = 20
CARP_TTL = 255
IPTOS_LOWDELAY = 0x10
IP_DF = 0x4000
BOW_OUT = 255  # advbase=255 and advskew=255: "I am leaving, take over now"
MAX_PASSWORD_LEN = 19  # ucarp copies password + NUL into a 20-byte buffer

_CARP_HEAD = struct.Struct("!BBBBBBH")  # ver/type, vhid, advskew, authlen, demote, advbase, cksum
_IP_HEAD = struct.Struct("!BBHHHBBH4s4s")


class DropReason(StrEnum):
    """Why a received packet was not accepted; each value is a metrics label."""

    TOO_SHORT = "too_short"
    OWN_PACKET = "own_packet"
    NOT_CARP = "not_carp"
    BOGUS_SIZE = "bogus_size"
    BAD_TTL = "bad_ttl"
    BAD_VERSION = "bad_version"
    UNKNOWN_VHID = "unknown_vhid"
    WRONG_GROUP = "wrong_group"
    BAD_CHECKSUM = "bad_checksum"
    BAD_DIGEST = "bad_digest"
    REPLAY = "replay"
    NOT_A_PEER = "not_a_peer"
    # the socket's receive buffer was full: the kernel dropped the packet before the
    # daemon could read it (what a flood beyond the rate one core absorbs turns into)
    KERNEL_RCVBUF = "kernel_rcvbuf"


@dataclass(frozen=True, slots=True)
class Advertisement:
    """The fields of a CARP header that matter to the election."""

    vhid: int
    advbase: int
    advskew: int
    counter: int
    digest: bytes
    version: int = CARP_VERSION
    type: int = CARP_TYPE_ADVERTISEMENT
    authlen: int = CARP_AUTHLEN
    demote: int = 0


@dataclass(frozen=True, slots=True)
class Packet:
    """A structurally sound packet carrying a CARP header (not yet authenticated)."""

    src: IPAddress
    dst: IPAddress
    ttl: int  # IPv6: the hop limit
    adv: Advertisement
    # the checksum domain: IPv4 header (with options) + 36 CARP bytes; IPv6: the 36 bytes
    checked_bytes: bytes


def internet_checksum(data: bytes) -> int:
    """RFC 1071 one's-complement checksum; a buffer with a correct checksum inside yields 0."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return int(~total & 0xFFFF)


class Authenticator:
    """HMAC-SHA1 over 0x02 0x01 vhid VIP counter, keyed with the raw password bytes.

    The VIP is 4 bytes (ucarp) or 16 (an IPv6 VIP): FreeBSD's carp_hmac_prepare for a
    vhid holding exactly that one address (docs/ipv6.md). The constant prefix is hashed
    once; each digest copies that state, which is what makes hundreds of VHIDs per
    process cheap.
    """

    __slots__ = ("_prefix_state",)

    def __init__(self, password: bytes, vhid: int, vip: IPAddress) -> None:
        if not 1 <= len(password) <= MAX_PASSWORD_LEN:
            raise ValueError(f"password must be 1..{MAX_PASSWORD_LEN} bytes, got {len(password)}")
        prefix = bytes((CARP_VERSION, CARP_TYPE_ADVERTISEMENT, vhid)) + vip.packed
        self._prefix_state = hmac.new(password, prefix, hashlib.sha1)

    def digest(self, counter: int) -> bytes:
        state = self._prefix_state.copy()
        state.update(counter.to_bytes(8, "big"))
        return state.digest()


def encode_carp(vhid: int, advbase: int, advskew: int, counter: int, digest: bytes) -> bytes:
    """The 36-byte CARP header with its checksum filled in."""
    head = _CARP_HEAD.pack(
        (CARP_VERSION << 4) | CARP_TYPE_ADVERTISEMENT, vhid, advskew, CARP_AUTHLEN, 0, advbase, 0
    )
    body = head + counter.to_bytes(8, "big") + digest
    cksum = internet_checksum(body)
    return body[:6] + cksum.to_bytes(2, "big") + body[8:]


def encode_ip(
    payload: bytes, src: IPv4Address, dst: IPv4Address, ip_id: int, ttl: int = CARP_TTL
) -> bytes:
    """IPv4 header as ucarp writes it (TOS low-delay, DF, TTL 255, protocol 112) + payload."""
    head = _IP_HEAD.pack(
        0x45,
        IPTOS_LOWDELAY,
        IP_HEADER_LEN + len(payload),
        ip_id,
        IP_DF,
        ttl,
        PROTO_CARP,
        0,
        src.packed,
        dst.packed,
    )
    cksum = internet_checksum(head)
    return head[:10] + cksum.to_bytes(2, "big") + head[12:] + payload


def group_mac(group: IPv4Address) -> bytes:
    """RFC 1112 mapping: 01:00:5e + the low 23 bits of the group address."""
    low = int(group) & 0x7FFFFF
    return b"\x01\x00\x5e" + low.to_bytes(3, "big")


def virtual_mac(vhid: int) -> bytes:
    """ucarp's advert source MAC 00:00:5e:00:00:<vhid> (not the VRRP 00:00:5e:00:01:xx)."""
    return b"\x00\x00\x5e\x00\x00" + bytes((vhid,))


BROADCAST_MAC = b"\xff" * 6


def encode_ethernet(payload: bytes, dst_mac: bytes, src_mac: bytes, ethertype: int) -> bytes:
    return dst_mac + src_mac + ethertype.to_bytes(2, "big") + payload


def encode_garp(mac: bytes, vip: IPv4Address) -> bytes:
    """ucarp's gratuitous ARP: a broadcast request whose sender and target are both the VIP."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + vip.packed + mac + vip.packed
    return encode_ethernet(arp, BROADCAST_MAC, mac, 0x0806)


def decode_ip(data: bytes) -> Packet | DropReason:
    """Structural receive checks (length, protocol, header size), in ucarp's order.

    Deliberately not checked, like ucarp: IP version nibble, total length, CARP type,
    authlen, demote byte. Authentication is the caller's job (it needs the local config).
    """
    if len(data) < IP_HEADER_LEN:
        return DropReason.TOO_SHORT
    if data[9] != PROTO_CARP:
        return DropReason.NOT_CARP
    ihl = (data[0] & 0x0F) * 4
    if ihl < IP_HEADER_LEN or len(data) < ihl + CARP_LEN:
        return DropReason.BOGUS_SIZE
    return Packet(
        src=IPv4Address(bytes(data[12:16])),
        dst=IPv4Address(bytes(data[16:20])),
        ttl=data[8],
        adv=decode_header(data[ihl : ihl + CARP_LEN]),
        checked_bytes=bytes(data[: ihl + CARP_LEN]),
    )


def decode_header(carp: bytes) -> Advertisement:
    """The fields of a 36-byte CARP header (IPv4 and IPv6 alike)."""
    ver_type, vhid, advskew, authlen, demote, advbase, _ = _CARP_HEAD.unpack_from(carp)
    return Advertisement(
        vhid=vhid,
        advbase=advbase,
        advskew=advskew,
        counter=int.from_bytes(carp[8:16], "big"),
        digest=bytes(carp[16:36]),
        version=ver_type >> 4,
        type=ver_type & 0x0F,
        authlen=authlen,
        demote=demote,
    )


def interval_us(advbase: int, advskew: int) -> int:
    """A node's advertisement interval in microseconds, truncated exactly like ucarp."""
    return advbase * 1_000_000 + (advskew * 1_000_000) // 256
