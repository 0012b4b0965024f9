"""VipInstance wiring with a fake transport: sends, GARP order, vetoes, shutdown budget.

Promotions are triggered by a bow-out advert (peer timing out), so nothing here waits
for a dead interval."""

import asyncio
import time
from ipaddress import IPv4Address

from tests.unit.fakes import FakeTransport
from vip_sidecar import carp
from vip_sidecar.config import Config, ProviderSpec, build_config
from vip_sidecar.election import State
from vip_sidecar.instance import VipInstance
from vip_sidecar.providers.base import Provider, Veto

PEER = IPv4Address("10.0.0.3")


def config(**extra):
    return build_config({"interface": "fk0", "srcip": "10.0.0.2", "vhid": 5, "pass": "pw",
                         "addr": "10.0.0.9", **extra})


def bow_out_packet(cfg, src=PEER):
    vip = cfg.vips[0]
    auth = carp.Authenticator(vip.password, vip.vhid, vip.addr)
    payload = carp.encode_carp(vip.vhid, 255, 255, 77, auth.digest(77))
    pkt = carp.decode_ip(carp.encode_ip(payload, src, vip.mcast, 1))
    assert isinstance(pkt, carp.Packet)
    return pkt


class Gate(Provider):
    """up() waits for a gate; records calls; may veto or announce."""

    def __init__(self, cfg: Config, *, veto=False, announces=False, hang_down=False,
                 timeout=30.0):
        super().__init__(ProviderSpec("gate", timeout=timeout), cfg.vips[0], cfg)
        self.gate = asyncio.Event()
        self.calls: list[str] = []
        self.can_veto = veto
        self.announces = announces
        self.hang_down = hang_down

    async def pre_master(self, ctx):
        self.calls.append("pre_master")
        await self.gate.wait()
        raise Veto("not now")

    async def up(self, ctx):
        self.calls.append("up")
        await self.gate.wait()

    async def down(self, ctx):
        self.calls.append("down")
        if self.hang_down:
            await asyncio.sleep(3600)

    def announce(self):
        self.calls.append("announce")


async def make(cfg, providers=()):
    transport = FakeTransport("fk0")
    inst = VipInstance(cfg.vips[0], cfg, transport, list(providers), "node")
    await inst.start()
    return inst, transport


async def settle():
    for _ in range(20):
        await asyncio.sleep(0)


async def test_one_unreachable_peer_does_not_silence_the_others():
    cfg = config(peers=["10.0.0.3", "10.0.0.4"])
    inst, transport = await make(cfg)

    def send_unicast(packet, dst):
        if str(dst) == "10.0.0.3":
            raise OSError(101, "Network is unreachable")
        transport.sent.append((f"unicast:{dst}", packet))

    transport.send_unicast = send_unicast
    for _ in range(5):
        inst.send_advert(1, 0)
    assert [kind for kind, _ in transport.sent] == ["unicast:10.0.0.4"] * 5
    assert inst.stats.adverts_sent == 5 and inst.stats.send_errors == 5
    assert inst.election.advskew == 0  # not treated as a failing link (no 240 skew)
    await inst.stop(0, asyncio.get_running_loop().time() + 1)


async def test_first_garp_follows_the_up_actions_like_ucarp():
    cfg = config()
    gate = Gate(cfg)
    inst, transport = await make(cfg, [gate])
    await settle()
    inst.on_packet(bow_out_packet(cfg))  # the master leaves: we take over at once
    assert inst.election.state is State.MASTER
    await settle()
    assert gate.calls[-1] == "up"
    assert [k for k, _ in transport.sent if k == "announce"] == []  # up still running
    assert any(k == "mcast" for k, _ in transport.sent)  # but adverts already flow
    gate.gate.set()
    await settle()
    assert [f for k, f in transport.sent if k == "announce"] == [cfg.vips[0].addr.packed]
    await inst.stop(0, asyncio.get_running_loop().time() + 1)


async def test_announcing_provider_gets_the_reassert_garp():
    cfg = config()
    gate = Gate(cfg, announces=True)
    gate.gate.set()
    inst, transport = await make(cfg, [gate])
    inst.on_packet(bow_out_packet(cfg))
    await settle()
    assert inst.applied is State.MASTER
    # a worse master advertises (partition healed): ucarp re-GARPs, so must we
    worse = bow_out_packet(cfg, src=IPv4Address("10.0.0.4"))
    inst.on_packet(worse)
    assert gate.calls.count("announce") == 1
    assert [k for k, _ in transport.sent if k == "announce"] == []  # the provider owns it
    await inst.stop(0, asyncio.get_running_loop().time() + 1)


async def test_late_veto_answer_for_a_void_request_is_ignored():
    cfg = config()
    gate = Gate(cfg, veto=True)
    inst, _ = await make(cfg, [gate])
    inst.on_packet(bow_out_packet(cfg))  # request 1: pre_master blocks on the gate
    await settle()
    assert inst.election.pending is not None and gate.calls[-1] == "pre_master"
    # a live master is heard: request 1 is void; its refusal must not count
    vip = cfg.vips[0]
    auth = carp.Authenticator(vip.password, vip.vhid, vip.addr)
    alive = carp.decode_ip(carp.encode_ip(carp.encode_carp(5, 1, 0, 78, auth.digest(78)),
                                          PEER, vip.mcast, 2))
    inst.on_packet(alive)
    assert inst.election.pending is None
    gate.gate.set()
    await settle()
    assert inst.stats.vetoes == 0 and inst.election.demotion == 0
    assert inst.election.state is State.BACKUP
    await inst.stop(0, asyncio.get_running_loop().time() + 1)


async def test_shutdown_respects_one_total_budget_even_if_down_hangs():
    cfg = config()
    gate = Gate(cfg, hang_down=True, timeout=60)
    gate.gate.set()
    inst, _ = await make(cfg, [gate])
    inst.on_packet(bow_out_packet(cfg))
    await settle()
    assert inst.applied is State.MASTER
    t0 = time.monotonic()
    await inst.stop(5, asyncio.get_running_loop().time() + 0.5)
    assert time.monotonic() - t0 < 1.5


async def test_providers_are_told_when_the_node_is_no_longer_meant_to_be_master():
    """VipContext.is_master: a hook still running after a demotion (a slow AWS check)
    reads it to stop before changing anything outside (issue 17)."""
    cfg = config()
    gate = Gate(cfg)
    inst, _ = await make(cfg, [gate])
    await settle()
    seen: list[bool] = []

    async def up(ctx):
        seen.append(ctx.is_master())
        await gate.gate.wait()
        seen.append(ctx.is_master())

    gate.up = up  # type: ignore[method-assign]
    inst.on_packet(bow_out_packet(cfg))
    await settle()
    assert seen == [True]
    inst.operator_demote(5.0)  # demoted while up() still runs
    gate.gate.set()
    await settle()
    assert seen == [True, False]
    await inst.stop(0, asyncio.get_running_loop().time() + 1)
