"""Backoff and the read -> act -> verify loop, with injectable clock and sleep.

EC2 mutations are asynchronous and its describe calls are eventually consistent, so a
move is "done" only when a read shows it. `converge` keeps reading until the state is
right or the deadline passes, acting on what each read says is missing. It repeats an
action only once the previous one had time to show (`act_interval`); a *different*
action (the next step) runs at once.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Clock = Callable[[], float]
AsyncSleep = Callable[[float], Awaitable[None]]


@dataclass
class Backoff:
    """Exponential delays with jitter: initial * multiplier^n, capped at maximum.

    Equal jitter (half fixed, half random) keeps a floor so polls never collapse to 0
    while still spreading out nodes that started together."""

    initial: float = 0.25
    maximum: float = 4.0
    multiplier: float = 2.0
    jitter: bool = True
    rng: random.Random = field(default_factory=random.Random)

    def delays(self) -> Iterator[float]:
        delay = self.initial
        while True:
            if self.jitter:
                yield delay / 2 + self.rng.uniform(0, delay / 2)
            else:
                yield delay
            delay = min(self.maximum, delay * self.multiplier)


@dataclass
class Plan:
    """What one read found: `ok`, or the next `step` to take (a key naming the action)."""

    ok: bool = False
    step: str | None = None
    summary: str = ""


P = TypeVar("P", bound=Plan)


@dataclass
class ConvergeResult(Generic[P]):
    ok: bool
    plan: P
    reads: int
    acts: int
    started: float
    first_act_done: float | None  # T_api: when the first mutating call returned
    finished: float  # T_effective when ok

    @property
    def api_s(self) -> float | None:
        return None if self.first_act_done is None else self.first_act_done - self.started

    @property
    def effective_s(self) -> float:
        return self.finished - self.started


async def converge(
    read: Callable[[], Awaitable[P]],
    act: Callable[[P], Awaitable[None]],
    *,
    deadline: float,
    clock: Clock,
    sleep: AsyncSleep,
    backoff: Backoff,
    act_interval: float = 3.0,
) -> ConvergeResult[P]:
    """Read, act on what is missing, poll with backoff until ok or `deadline`.

    Returns ok=False (with the last plan) on deadline; errors from read/act propagate.
    """
    started = clock()
    delays = backoff.delays()
    reads = acts = 0
    last_step: str | None = None
    last_act_at: float | None = None
    first_act_done: float | None = None
    while True:
        plan = await read()
        reads += 1
        if plan.ok:
            return ConvergeResult(True, plan, reads, acts, started, first_act_done, clock())
        now = clock()
        if now >= deadline:
            return ConvergeResult(False, plan, reads, acts, started, first_act_done, now)
        if plan.step is not None and (
            plan.step != last_step or last_act_at is None or now - last_act_at >= act_interval
        ):
            await act(plan)
            acts += 1
            last_step = plan.step
            last_act_at = clock()
            if first_act_done is None:
                first_act_done = last_act_at
        remaining = deadline - clock()
        if remaining <= 0:
            return ConvergeResult(False, plan, reads, acts, started, first_act_done, clock())
        # the last poll lands on the deadline rather than giving up a poll early
        await sleep(min(next(delays), remaining))
