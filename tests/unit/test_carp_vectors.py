"""Every hex test vector of spec section 8.2, reproduced byte for byte."""

from ipaddress import IPv4Address

import pytest

from vip_sidecar import carp
from vip_sidecar.inet import DEFAULT_GROUP4


def h(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# (name, password, vhid, vip, src, packet hex) straight from ucarp.md section 8.2
VECTORS = [
    (
        "TV1",
        b"secret",
        7,
        "10.99.0.100",
        "10.99.0.1",
        """45 10 00 38 6d 28 40 00 ff 70 23 a7 0a 63 00 01 e0 00 00 12
        21 07 00 07 00 01 88 75 c4 11 91 bb 7f a0 cc 19
        49 68 e3 41 83 4c d8 c9 bc 05 3f 8a b2 cb 7a c1 8e d2 74 43""",
    ),
    (
        "TV2",
        b"secret",
        7,
        "10.99.0.100",
        "10.99.0.1",
        """45 10 00 38 c8 88 40 00 ff 70 c8 46 0a 63 00 01 e0 00 00 12
        21 07 00 07 00 01 1b d2 22 9e 08 df dd 3d c6 d4
        fc f8 b4 bd c0 7d 71 92 bd 77 41 33 32 cc 8d 01 9e 3f b3 0f""",
    ),
    (
        "TV3",
        b"secret",
        7,
        "10.99.0.100",
        "10.99.0.1",
        """45 10 00 38 d0 37 40 00 ff 70 c0 97 0a 63 00 01 e0 00 00 12
        21 07 64 07 00 01 9e 04 4d 4d 7e 51 03 d5 c8 f2
        79 d1 62 15 19 cc 17 b1 1f 5b 83 3c ec 92 86 56 8b 97 96 08""",
    ),
    (
        "TV4",
        b"abcdefghijklmnopqrs",
        255,
        "192.0.2.254",
        "10.99.0.1",
        """45 10 00 38 30 1e 40 00 ff 70 60 b1 0a 63 00 01 e0 00 00 12
        21 ff ff 07 00 03 71 7d 83 15 37 47 e7 6d 76 dd
        69 de 6e cb 6d 83 c9 5c bd 8d 7e 34 93 b8 89 69 64 4f 88 12""",
    ),
    (
        "TV5",
        b"pw",
        9,
        "10.99.5.5",
        "10.99.1.10",
        "45100038de974000ff70b12e0a63010ae0000012 2109000700011a07 b3e9bf180c2d5998"
        " 89cec0c0f8c195425045fee9e404b33480f1ac31",
    ),
    (
        "TV6",
        b"pw",
        9,
        "10.99.5.5",
        "10.99.0.11",
        "45100038edc94000ff70a2fb0a63000be0000012 2109000700017b57 b3e9bf180c2d5999"
        " 7ba344294774f43be16399c54a861dfd9c120f92",
    ),
]


@pytest.mark.parametrize(("name", "pw", "vhid", "vip", "src", "hexdata"), VECTORS)
def test_encode_reproduces_vector(name, pw, vhid, vip, src, hexdata):
    wire = h(hexdata)
    assert len(wire) == 56
    ip_id = int.from_bytes(wire[4:6], "big")
    counter = int.from_bytes(wire[28:36], "big")
    auth = carp.Authenticator(pw, vhid, IPv4Address(vip))
    payload = carp.encode_carp(vhid, wire[25], wire[22], counter, auth.digest(counter))
    built = carp.encode_ip(payload, IPv4Address(src), DEFAULT_GROUP4, ip_id)
    assert built.hex() == wire.hex(), name


@pytest.mark.parametrize(("name", "pw", "vhid", "vip", "src", "hexdata"), VECTORS)
def test_decode_and_verify_vector(name, pw, vhid, vip, src, hexdata):
    pkt = carp.decode_ip(h(hexdata))
    assert isinstance(pkt, carp.Packet), name
    assert pkt.src == IPv4Address(src)
    assert pkt.dst == DEFAULT_GROUP4
    assert pkt.ttl == 255
    assert pkt.adv.vhid == vhid and pkt.adv.version == 2 and pkt.adv.authlen == 7
    assert carp.internet_checksum(pkt.checked_bytes) == 0
    def digest(password: bytes, addr: str) -> bytes:
        return carp.Authenticator(password, vhid, IPv4Address(addr)).digest(pkt.adv.counter)

    assert digest(pw, vip) == pkt.adv.digest
    # a different VIP or password must not verify (the digest covers both and the vhid)
    assert digest(pw[:-1] + b"#", vip) != pkt.adv.digest
    assert digest(pw, "10.0.0.1") != pkt.adv.digest


def test_tv1_documented_field_values():
    wire = h(VECTORS[0][5])
    assert wire[26:28] == b"\x88\x75"  # CARP checksum
    assert wire[10:12] == b"\x23\xa7"  # IP checksum
    msg = bytes.fromhex("0201070a630064c41191bb7fa0cc19")
    import hashlib
    import hmac

    assert hmac.new(b"secret", msg, hashlib.sha1).hexdigest() == (
        "4968e341834cd8c9bc053f8ab2cb7ac18ed27443"
    )


def test_tv6_counter_is_tv5_plus_one():
    tv5 = carp.decode_ip(h(VECTORS[4][5]))
    tv6 = carp.decode_ip(h(VECTORS[5][5]))
    assert isinstance(tv5, carp.Packet) and isinstance(tv6, carp.Packet)
    assert tv6.adv.counter == tv5.adv.counter + 1


def test_tv1_ethernet_header_and_garp():
    frame = carp.encode_ethernet(
        h(VECTORS[0][5]), carp.group_mac(DEFAULT_GROUP4), carp.virtual_mac(7), 0x0800
    )
    assert frame[:14].hex() == "01005e00001200005e0000070800"
    assert len(frame) == 70
    garp = carp.encode_garp(bytes.fromhex("02000000000a"), IPv4Address("10.99.0.100"))
    assert garp.hex() == (
        "ffffffffffff02000000000a0806000108000604000102000000000a0a63006402000000000a0a630064"
    )
    assert len(garp) == 42


def test_group_mac_other_group():
    assert carp.group_mac(IPv4Address("239.192.1.2")).hex() == "01005e400102"


def test_interval_truncation():
    assert carp.interval_us(1, 0) == 1_000_000
    assert carp.interval_us(1, 100) == 1_390_625
    assert carp.interval_us(3, 255) == 3_996_093


def test_password_length_limit():
    carp.Authenticator(b"a" * 19, 1, IPv4Address("10.0.0.1"))
    with pytest.raises(ValueError):
        carp.Authenticator(b"a" * 20, 1, IPv4Address("10.0.0.1"))
    with pytest.raises(ValueError):
        carp.Authenticator(b"", 1, IPv4Address("10.0.0.1"))
