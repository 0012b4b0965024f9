"""CARP over IPv6: the HMAC of FreeBSD's carp_hmac_prepare for one IPv6 address, the
header checksum without pseudo-header, the receive checks, the neighbour advert."""

import hashlib
import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from vip_sidecar import carp, carp6
from vip_sidecar.inet import DEFAULT_GROUP6

VIP6 = IPv6Address("fd00::100")
COUNTER = 0x0102030405060708
# docs/ipv6.md / spec ipv6.md section 1 (worked example)
DIGEST = "ffb3a0ec722ef047c5191b59c3c33ba8d532a039"
HEADER = "210700070001767a0102030405060708" + DIGEST


def bsd_hmac(password: bytes, vhid: int, in6: bytes, counter: int) -> bytes:
    """A literal transcription of carp_hmac_prepare + carp_hmac_generate (FreeBSD
    sys/netinet/ip_carp.c), not a call to hmac: sc_key[20] zero-padded into a 64-byte
    pad, XOR 0x36; SHA1(pad, version, type, vhid, in6, counter); pad XOR 0x36^0x5c;
    SHA1(pad, inner)."""
    key = (password + b"\0" * 20)[:20]
    pad = bytearray(key + b"\0" * (64 - 20))
    for i in range(64):
        pad[i] ^= 0x36
    inner = hashlib.sha1(bytes(pad))
    inner.update(bytes([2]))  # CARP_VERSION
    inner.update(bytes([1]))  # CARP_ADVERTISEMENT
    inner.update(bytes([vhid]))
    inner.update(in6)  # the one IPv6 ifaddr of the vhid, scope zeroed (none here)
    inner.update(struct.pack(">II", counter >> 32, counter & 0xFFFFFFFF))  # htonl hi, lo
    for i in range(64):
        pad[i] ^= 0x36 ^ 0x5C
    return hashlib.sha1(bytes(pad) + inner.digest()).digest()


def test_the_independent_transcription_gives_the_documented_vector():
    assert bsd_hmac(b"secret", 7, VIP6.packed, COUNTER).hex() == DIGEST


def test_our_authenticator_matches_it_for_ipv6():
    auth = carp.Authenticator(b"secret", 7, VIP6)
    assert auth.digest(COUNTER).hex() == DIGEST
    assert auth.digest(COUNTER + 1).hex() != DIGEST


@pytest.mark.parametrize(
    ("password", "vhid", "vip", "counter"),
    [
        (b"x", 1, "2001:db8::1", 0),
        (b"abcdefghijklmnopqrs", 255, "fe80::1", (1 << 64) - 1),
        (b"pw", 42, "fd12:3456:789a:1::dead:beef", 0x00000001FFFFFFFF),
    ],
)
def test_more_ipv6_digests_agree_with_the_transcription(password, vhid, vip, counter):
    ip = IPv6Address(vip)
    ours = carp.Authenticator(password, vhid, ip).digest(counter)
    assert ours == bsd_hmac(password, vhid, ip.packed, counter)


def test_the_header_and_its_checksum_cover_the_36_bytes_only():
    body = carp.encode_carp(7, 1, 0, COUNTER, bytes.fromhex(DIGEST))
    assert body.hex() == HEADER and body[6:8] == b"\x76\x7a"
    # no pseudo-header: the plain RFC 1071 sum of the header alone is zero
    assert carp.internet_checksum(body) == 0


SRC = IPv6Address("fe80::1")


def test_decode_keeps_source_destination_hop_limit_and_the_checksum_domain():
    payload = bytes.fromhex(HEADER)
    pkt = carp6.decode(payload + b"trailing", SRC, DEFAULT_GROUP6, 255)
    assert isinstance(pkt, carp.Packet)
    assert (pkt.src, pkt.dst, pkt.ttl) == (SRC, IPv6Address("ff02::12"), 255)
    assert pkt.adv.vhid == 7 and pkt.adv.counter == COUNTER and pkt.adv.digest.hex() == DIGEST
    assert pkt.checked_bytes == payload


@pytest.mark.parametrize("length", [0, 1, 20, 35])
def test_a_truncated_advert_is_bogus_size(length):
    payload = bytes.fromhex(HEADER)[:length]
    assert carp6.decode(payload, SRC, DEFAULT_GROUP6, 255) is carp.DropReason.BOGUS_SIZE


def test_hop_limit_rule_multicast_needs_255_unicast_ipv6_does_not():
    pkt = carp6.decode(bytes.fromhex(HEADER), SRC, IPv6Address("ff02::12"), 64)
    assert isinstance(pkt, carp.Packet)
    peers = (IPv6Address("2001:db8::2"),)
    assert not carp6.hop_limit_ok(pkt, ())
    # FreeBSD 14: `if (multicast && ttl != CARP_DFLTTL)` (unicast carpaddr6)
    assert carp6.hop_limit_ok(pkt, peers)
    ok = carp6.decode(bytes.fromhex(HEADER), SRC, IPv6Address("ff02::12"), 255)
    assert isinstance(ok, carp.Packet) and carp6.hop_limit_ok(ok, ())
    # IPv4 stays ucarp's: 255 always, unicast or not
    v4 = carp.Packet(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), 64, pkt.adv, b"")
    assert not carp6.hop_limit_ok(v4, (IPv4Address("10.0.0.1"),))


def test_unsolicited_neighbour_advert_bytes():
    mac = bytes.fromhex("020000000099")
    na = carp6.encode_na(VIP6, mac)
    # type 136 code 0, checksum left to the kernel, flags O=1 (R=0 S=0), target, TLLA
    assert na.hex() == (
        "88000000" + "20000000" + VIP6.packed.hex() + "0201" + "020000000099"
    )
    assert carp6.encode_na(VIP6, mac, router=True)[4:8].hex() == "a0000000"
