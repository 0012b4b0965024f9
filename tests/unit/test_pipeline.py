"""Provider pipeline: order, reverse order, timeouts, veto, failures never raise."""

import asyncio

import pytest

from tests.unit.fakes import vip_config
from vip_sidecar.config import Config, ProviderSpec
from vip_sidecar.pipeline import Pipeline
from vip_sidecar.providers.base import Provider, Veto, VipContext

VIP = vip_config()
CFG = Config(vips=(VIP,))


class Rec(Provider):
    def __init__(self, label, calls, *, fail=None, hang=None, veto=False, timeout=0.05):
        super().__init__(ProviderSpec(name="x", id=label, timeout=timeout), VIP, CFG)
        self.calls, self.fail, self.hang, self.veto_ = calls, fail, hang, veto
        self.can_veto = veto

    async def _do(self, action):
        self.calls.append(f"{self.name}.{action}")
        if self.hang == action:
            await asyncio.sleep(60)
        if self.fail == action:
            raise RuntimeError(f"{self.name} broke")

    async def up(self, ctx):
        await self._do("up")

    async def down(self, ctx):
        await self._do("down")

    async def pre_master(self, ctx):
        self.calls.append(f"{self.name}.pre")
        if self.veto_:
            raise Veto("fence held elsewhere")


CTX = VipContext(VIP, "node")


async def test_up_in_order_down_in_reverse():
    calls = []
    p = Pipeline([Rec("a", calls), Rec("b", calls), Rec("c", calls)])
    assert await p.up(CTX) is None
    assert await p.down(CTX) == []
    assert calls == ["a.up", "b.up", "c.up", "c.down", "b.down", "a.down"]
    assert all(r.ok for r in p.results.values())


async def test_failed_up_stops_and_undoes_what_ran():
    calls = []
    p = Pipeline([Rec("a", calls), Rec("b", calls, fail="up"), Rec("c", calls)])
    failure = await p.up(CTX)
    assert failure is not None and failure.provider == "b" and "b broke" in failure.error
    assert calls == ["a.up", "b.up", "b.down", "a.down"]
    assert not p.results["b"].ok or p.results["b"].action == "down"


async def test_timeout_is_a_failure_not_a_hang():
    calls = []
    observed = []
    p = Pipeline(
        [Rec("a", calls, hang="up", timeout=0.05)],
        observer=lambda n, r: observed.append((n, r.action, r.ok)),
    )
    failure = await asyncio.wait_for(p.up(CTX), timeout=2)
    assert failure is not None and failure.timed_out and "timed out after 0.05s" in failure.error
    assert ("a", "up", False) in observed


async def test_down_continues_past_failures():
    calls = []
    p = Pipeline([Rec("a", calls), Rec("b", calls, fail="down")])
    failures = await p.down(CTX)
    assert [f.provider for f in failures] == ["b"]
    assert calls == ["b.down", "a.down"]


async def test_veto():
    calls = []
    p = Pipeline([Rec("a", calls), Rec("fence", calls, veto=True)])
    assert p.can_veto
    assert await p.pre_master(CTX) == "fence: fence held elsewhere"
    ok = Pipeline([Rec("a", calls)])
    assert not ok.can_veto and await ok.pre_master(CTX) is None


@pytest.mark.parametrize("exc", [ValueError("x"), KeyError("y"), OSError(5, "io")])
async def test_any_exception_becomes_a_failure(exc):
    class Boom(Provider):
        async def up(self, ctx):
            raise exc

    p = Pipeline([Boom(ProviderSpec(name="boom"), VIP, CFG)])
    failure = await p.up(CTX)
    assert failure is not None and type(exc).__name__ in failure.error


class Slow(Rec):
    """A provider whose init takes a while (a kubernetes client, an API that is down)."""

    async def init(self):
        self.calls.append(f"{self.name}.init")
        await asyncio.sleep(0.05)


class Local(Rec):
    down_before_init = True

    async def init(self):
        self.calls.append(f"{self.name}.init")


async def test_local_clean_up_runs_before_any_init_at_start_up():
    """A restarted node removes its stale VIP before a slow provider initialises: only
    the providers that say their down() needs no init() (the alias) run early."""
    from tests.unit.fakes import FakeTransport
    from vip_sidecar.config import build_config
    from vip_sidecar.runtime import Runtime

    cfg = build_config({"interface": "pb0", "srcip": "10.99.0.2", "vhid": 3, "pass": "pw",
                        "addr": "10.99.0.100"})
    calls: list[str] = []
    providers = [Slow("fence", calls), Local("alias", calls), Rec("script", calls)]
    rt = Runtime(cfg, {cfg.vips[0].name: providers}, transport_factory=FakeTransport,
                 handle_signals=False)
    await rt.start()
    try:
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert calls[:3] == ["alias.down", "fence.init", "alias.init"], calls
        # then the usual start-up down of every provider, in reverse, after the transition
        assert calls[3:6] == ["script.down", "alias.down", "fence.down"], calls
    finally:
        await rt.shutdown()
