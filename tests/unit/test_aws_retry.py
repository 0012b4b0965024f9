"""Backoff and the read/act/verify loop with a fake clock (nothing sleeps for real)."""

from __future__ import annotations

import itertools
import random
import time
from dataclasses import dataclass

import pytest

from tests.awsfakes.fake_ec2 import FakeClock, client_error
from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsPermissionError, AwsRetryExhausted
from vip_sidecar.providers.aws.retry import Backoff, Plan, converge


def test_backoff_doubles_to_the_cap():
    delays = Backoff(initial=0.25, maximum=2.0, jitter=False).delays()
    assert [next(delays) for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]


def test_backoff_jitter_stays_between_half_and_full():
    delays = Backoff(initial=1.0, maximum=8.0, rng=random.Random(7)).delays()
    for nominal in (1, 2, 4, 8, 8, 8):
        d = next(delays)
        assert nominal / 2 <= d <= nominal


@dataclass
class P(Plan):
    value: int = 0


class World:
    """A value that an action sets, visible to reads only `lag` reads later."""

    def __init__(self, lag: int = 0, target: int = 1) -> None:
        self.value = 0
        self.visible = 0
        self.lag = lag
        self.pending = 0
        self.target = target
        self.acts: list[tuple[float, str | None]] = []
        self.clock = FakeClock()

    async def read(self) -> P:
        if self.pending:
            self.pending -= 1
        else:
            self.visible = self.value
        ok = self.visible == self.target
        return P(ok=ok, step=None if ok else "set", value=self.visible)

    async def act(self, plan: P) -> None:
        self.acts.append((self.clock(), plan.step))
        self.value = self.target
        self.pending = self.lag


async def run(world: World, deadline: float = 20.0, act_interval: float = 3.0):
    return await converge(world.read, world.act, deadline=world.clock() + deadline,
                          clock=world.clock, sleep=world.clock.sleep,
                          backoff=Backoff(initial=0.25, maximum=2.0, jitter=False),
                          act_interval=act_interval)


async def test_already_right_means_one_read_and_no_action():
    w = World()
    w.value = w.visible = 1
    r = await run(w)
    assert r.ok and r.reads == 1 and r.acts == 0 and r.api_s is None and w.clock.slept == []


async def test_act_then_verify_records_api_and_effective_times():
    w = World(lag=2)
    r = await run(w)
    assert r.ok and r.acts == 1 and r.reads == 4
    assert w.clock.slept == [0.25, 0.5, 1.0]
    assert r.api_s == 0.0 and r.effective_s == pytest.approx(1.75)


async def test_same_step_is_repeated_only_after_act_interval():
    w = World(lag=1000)  # never shows
    started = time.monotonic()
    r = await run(w, deadline=10.0, act_interval=3.0)
    assert not r.ok and r.plan.step == "set"
    times = [t - 1000.0 for t, _ in w.acts]
    assert times[0] == 0.0
    assert all(b - a >= 3.0 for a, b in itertools.pairwise(times))
    assert len(times) == 3  # t=0, ~3.75, ~7.75
    assert w.clock() - 1000.0 == pytest.approx(10.0)  # the last poll lands on the deadline
    assert time.monotonic() - started < 1.0


async def test_a_new_step_runs_at_once():
    steps = iter(["a", "b", None])

    async def read() -> P:
        step = next(steps)
        return P(ok=step is None, step=step)

    done: list[str | None] = []

    async def act(plan: P) -> None:
        done.append(plan.step)

    clock = FakeClock()
    r = await converge(read, act, deadline=clock() + 5, clock=clock, sleep=clock.sleep,
                       backoff=Backoff(jitter=False), act_interval=100.0)
    assert r.ok and done == ["a", "b"]


async def test_errors_propagate():
    async def read() -> P:
        raise AwsConfigError("gone")

    clock = FakeClock()
    with pytest.raises(AwsConfigError):
        await converge(read, lambda p: None, deadline=clock() + 5,  # type: ignore[arg-type]
                       clock=clock, sleep=clock.sleep, backoff=Backoff())


# -- the EC2 call wrapper ------------------------------------------------------------------
class Client:
    def __init__(self, *outcomes):
        self.outcomes = list(outcomes)
        self.calls = 0

    def assign_private_ip_addresses(self, **params):
        self.calls += 1
        out = self.outcomes.pop(0)
        if isinstance(out, Exception):
            raise out
        return out


OK = {"ResponseMetadata": {"RetryAttempts": 1}}


async def test_call_retries_throttling_then_succeeds():
    clock = FakeClock()
    c = Client(client_error("RequestLimitExceeded", 503, retries=2),
               client_error("InternalError", 500, retries=2), OK)
    api = Ec2Api(c, clock=clock, sleep=clock.sleep, backoff=Backoff(0.2, 2.0, jitter=False))
    assert await api.call("AssignPrivateIpAddresses", clock() + 10) is OK
    assert c.calls == 3 and clock.slept == [0.2, 0.4]
    assert api.stats.loop_retries["AssignPrivateIpAddresses"] == 2
    assert api.stats.botocore_retries["AssignPrivateIpAddresses"] == 5
    assert api.stats.errors == {"RequestLimitExceeded": 1, "InternalError": 1}


async def test_call_stops_retrying_at_the_deadline():
    clock = FakeClock()
    c = Client(*[client_error("RequestLimitExceeded", 503)] * 100)
    api = Ec2Api(c, clock=clock, sleep=clock.sleep, backoff=Backoff(1.0, 1.0, jitter=False))
    with pytest.raises(AwsRetryExhausted, match="RequestLimitExceeded") as exc:
        await api.call("AssignPrivateIpAddresses", clock() + 5.5)
    assert c.calls == 6 and "5 provider retries" in str(exc.value)


async def test_call_does_not_retry_denied():
    clock = FakeClock()
    c = Client(client_error("UnauthorizedOperation", 403), OK)
    api = Ec2Api(c, clock=clock, sleep=clock.sleep)
    with pytest.raises(AwsPermissionError, match="ec2:AssignPrivateIpAddresses"):
        await api.call("AssignPrivateIpAddresses", clock() + 10)
    assert c.calls == 1 and clock.slept == []


async def test_programming_errors_are_not_disguised():
    clock = FakeClock()
    c = Client(KeyError("bug"))
    api = Ec2Api(c, clock=clock, sleep=clock.sleep)
    with pytest.raises(KeyError):
        await api.call("AssignPrivateIpAddresses", clock() + 10)
