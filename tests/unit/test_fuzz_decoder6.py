"""Property test of the IPv6 receive path, like test_fuzz_decoder.py for IPv4: random and
mutated adverts with random hop limits, sources and destinations. Nothing may raise, a
packet is accepted exactly when an independent oracle (hashlib HMAC, a hand-written
checksum) says it is valid, and every other one is a counted drop."""

import hashlib
import hmac
import struct
from ipaddress import IPv6Address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import started_runtime
from vip_sidecar import carp
from vip_sidecar.config import build_config
from vip_sidecar.runtime import Runtime
from vip_sidecar.transport6 import Received6

OWN = IPv6Address("fe80::200")
PEERS = [IPv6Address("fe80::1"), IPv6Address("2001:db8::7"), OWN]
GROUPS = [IPv6Address("ff02::12"), IPv6Address("ff02::13"), IPv6Address("fe80::200")]
KEYS = {7: (b"secret", "fd00::100"), 255: (b"abcdefghijklmnopqrs", "2001:db8::ffff")}


def checksum_ok(header: bytes) -> bool:
    total = sum(struct.unpack("!18H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def oracle_valid(payload: bytes, src: IPv6Address, dst: IPv6Address, hops: int) -> bool:
    if len(payload) < 36 or src == OWN or hops != 255:
        return False
    c = payload[:36]
    if c[0] >> 4 != 2 or c[1] not in KEYS or dst != GROUPS[0] or not checksum_ok(c):
        return False
    pw, vip = KEYS[c[1]]
    msg = bytes([2, 1, c[1]]) + IPv6Address(vip).packed + c[8:16]
    return hmac.compare_digest(hmac.new(pw, msg, hashlib.sha1).digest(), c[16:36])


def seed(vhid: int, counter: int, advskew: int) -> bytes:
    pw, vip = KEYS[vhid]
    msg = bytes([2, 1, vhid]) + IPv6Address(vip).packed + counter.to_bytes(8, "big")
    body = bytearray(bytes([0x21, vhid, advskew, 7, 0, 1, 0, 0]) + counter.to_bytes(8, "big"))
    body += hmac.new(pw, msg, hashlib.sha1).digest()
    total = sum(struct.unpack("!18H", bytes(body)))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    body[6:8] = (~total & 0xFFFF).to_bytes(2, "big")
    return bytes(body)


SEEDS = [seed(7, 1, 0), seed(7, 2**63, 100), seed(255, 5, 254)]


@pytest.fixture(scope="module")
def runtime():
    cfg = build_config({
        "interface": "fz6", "srcip": str(OWN),
        "vips": [{"vhid": v, "pass": pw.decode(), "addr": vip, "advskew": 200}
                 for v, (pw, vip) in KEYS.items()],
    })
    with started_runtime(cfg) as rt:
        yield rt


def mutate(data: bytes, ops: list) -> bytes:
    out = bytearray(data)
    for kind, pos, value in ops:
        if not out:
            break
        if kind == "flip":
            out[pos % len(out)] ^= 1 << (value % 8)
        elif kind == "set":
            out[pos % len(out)] = value % 256
        elif kind == "truncate":
            del out[pos % (len(out) + 1) :]
        elif kind == "fixsum" and len(out) >= 36:
            out[6:8] = b"\0\0"
            out[6:8] = carp.internet_checksum(bytes(out[:36])).to_bytes(2, "big")
    return bytes(out)


op = st.tuples(st.sampled_from(["flip", "set", "truncate", "fixsum"]),
               st.integers(0, 100), st.integers(0, 255))
packet = st.tuples(
    st.one_of(
        st.tuples(st.sampled_from(SEEDS), st.lists(op, max_size=3)).map(lambda t: mutate(*t)),
        st.binary(max_size=60),
    ),
    st.sampled_from(PEERS),
    st.sampled_from(GROUPS),
    st.sampled_from([255, 255, 254, 64, 1, 0]),
)


def totals(rt: Runtime) -> tuple[int, int]:
    drops = sum(rt.iface_drops.values()) + sum(sum(i.stats.drops.values()) for i in rt.instances)
    return drops, sum(i.stats.adverts_received for i in rt.instances)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(packet, min_size=20, max_size=20))
def test_ipv6_receive_path_never_raises_and_drops_every_invalid_packet(runtime, batch):
    drops0, acc0 = totals(runtime)
    valid_n = 0
    for payload, src, dst, hops in batch:
        result = runtime.dispatch_decoded("fz6", Received6(payload, src, dst, hops).decode())
        valid = oracle_valid(payload, src, dst, hops)
        valid_n += valid
        assert (result is None) == valid, (payload.hex(), src, dst, hops, result)
    drops1, acc1 = totals(runtime)
    assert acc1 - acc0 == valid_n and drops1 - drops0 == len(batch) - valid_n


def test_the_seeds_are_valid_for_the_oracle_and_for_us(runtime):
    for data in SEEDS:
        assert oracle_valid(data, PEERS[0], GROUPS[0], 255)
        assert runtime.dispatch_decoded("fz6", Received6(data, PEERS[0], GROUPS[0], 255)
                                        .decode()) is None
