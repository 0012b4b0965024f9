"""Property test of the receive path: >= 10,000 random and mutated packets.

No exception may escape, and a packet is accepted exactly when an independent oracle
(written from the spec, not from our code) says it is a valid advert; every other one
is counted under a drop reason.
"""

import hashlib
import hmac
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.fakes import started_runtime
from tests.unit.test_carp_vectors import VECTORS, h
from vip_sidecar import carp
from vip_sidecar.config import build_config
from vip_sidecar.runtime import Runtime

OWN_SRC = bytes([10, 99, 0, 200])
KEYS = {
    7: (b"secret", "10.99.0.100"),
    255: (b"abcdefghijklmnopqrs", "192.0.2.254"),
    9: (b"pw", "10.99.5.5"),
}
SEEDS = [h(v[5]) for v in VECTORS]
BATCH = 50
EXAMPLES = 220  # 220 x 50 = 11,000 packets


def oracle_valid(data: bytes) -> bool:
    if len(data) < 20 or data[9] != 112:
        return False
    ihl = (data[0] & 0x0F) * 4
    if ihl < 20 or len(data) < ihl + 36:
        return False
    if data[12:16] == OWN_SRC or data[8] != 255:
        return False
    c = data[ihl : ihl + 36]
    if c[0] >> 4 != 2 or c[1] not in KEYS or data[16:20] != bytes([224, 0, 0, 18]):
        return False
    words = data[: ihl + 36] + (b"\0" if (ihl + 36) % 2 else b"")
    total = sum(struct.unpack(f"!{len(words) // 2}H", words))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    if total != 0xFFFF:
        return False
    pw, vip = KEYS[c[1]]
    msg = bytes([2, 1, c[1]]) + bytes(map(int, vip.split("."))) + c[8:16]
    return hmac.compare_digest(hmac.new(pw, msg, hashlib.sha1).digest(), c[16:36])


@pytest.fixture(scope="module")
def runtime():
    cfg = build_config(
        {
            "interface": "fz0",
            "srcip": "10.99.0.200",
            "vips": [
                {"vhid": v, "pass": pw.decode(), "addr": vip} for v, (pw, vip) in KEYS.items()
            ],
        }
    )
    with started_runtime(cfg) as rt:
        yield rt


def total_drops(rt: Runtime) -> int:
    return sum(rt.iface_drops.values()) + sum(sum(i.stats.drops.values()) for i in rt.instances)


def total_accepted(rt: Runtime) -> int:
    return sum(i.stats.adverts_received for i in rt.instances)


mutation = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 10_000), st.integers(0, 7)),
    st.tuples(st.just("set"), st.integers(0, 10_000), st.integers(0, 255)),
    st.tuples(st.just("truncate"), st.integers(0, 10_000)),
    st.tuples(st.just("append"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("ihl"), st.integers(0, 15)),
    st.tuples(st.just("fixsum")),  # recompute the CARP checksum after other edits
)


def mutate(seed: bytes, ops: list) -> bytes:
    data = bytearray(seed)
    for op in ops:
        if not data:
            break
        kind = op[0]
        if kind == "flip":
            data[op[1] % len(data)] ^= 1 << op[2]
        elif kind == "set":
            data[op[1] % len(data)] = op[2]
        elif kind == "truncate":
            del data[op[1] % (len(data) + 1) :]
        elif kind == "append":
            data += op[1]
        elif kind == "ihl":
            data[0] = (data[0] & 0xF0) | op[1]
        elif kind == "fixsum" and len(data) >= 56:
            data[26:28] = b"\0\0"
            data[26:28] = carp.internet_checksum(bytes(data[20:56])).to_bytes(2, "big")
    return bytes(data)


packet = st.one_of(
    st.tuples(st.sampled_from(range(len(SEEDS))), st.lists(mutation, max_size=4)).map(
        lambda t: mutate(SEEDS[t[0]], t[1])
    ),
    st.binary(min_size=0, max_size=120),
    st.binary(min_size=56, max_size=56).map(lambda b: b[:9] + b"\x70" + b[10:]),
)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(packet, min_size=BATCH, max_size=BATCH))
def test_receive_path_never_raises_and_drops_every_invalid_packet(runtime, batch):
    drops0, acc0 = total_drops(runtime), total_accepted(runtime)
    expected_valid = 0
    for data in batch:
        result = runtime.dispatch("fz0", data)  # must not raise
        valid = oracle_valid(data)
        expected_valid += valid
        assert (result is None) == valid, (data.hex(), result)
        if result is not None:
            assert isinstance(result, carp.DropReason)
    assert total_accepted(runtime) - acc0 == expected_valid
    assert total_drops(runtime) - drops0 == len(batch) - expected_valid


def test_the_unmutated_vectors_are_accepted(runtime):
    for seed in SEEDS:
        assert oracle_valid(seed)
        assert runtime.dispatch("fz0", seed) is None


def test_pure_noise_at_volume(runtime):
    before = total_drops(runtime)
    for _ in range(2000):
        assert runtime.dispatch("fz0", os.urandom(56)) is not None
    assert total_drops(runtime) - before == 2000
