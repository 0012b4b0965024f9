"""The reconciler of one VIP: drives the providers from the applied state to the desired one.

The election says what this node should be (`desired`); a worker task runs the provider
pipeline until `applied` matches, so a slow or hanging provider never delays an
advertisement. It also owns what follows from provider results: the demotion and
hold-down backoff after failures, the init retries behind /readyz, the periodic
provider checks while MASTER (and telling providers when the next one comes), and the
timeline of the latest promotion.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from vip_sidecar.config import Config
from vip_sidecar.election import Action, Election, Reason, State
from vip_sidecar.log import event
from vip_sidecar.pipeline import Pipeline, ProviderFailure, ProviderResult
from vip_sidecar.providers.base import Provider, Timing, VipContext, error_kind
from vip_sidecar.stats import VipStats

MAX_DEMOTION = 240  # BSD caps its demotion counter here; 255 is reserved for bow-out
INIT_RETRY_S = 15.0
CHECK_JITTER = 0.1  # provider checks run every reassert_interval +- 10 %

Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Future[Any]"]


@dataclass
class FailoverTimeline:
    """Timestamps (monotonic) of the phases of the latest promotion."""

    reason: str
    detected: float
    elected: float | None = None
    providers_done: dict[str, float] = field(default_factory=dict)
    completed: float | None = None

    def as_dict(self) -> dict[str, Any]:
        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - self.detected, 6)

        return {
            "reason": self.reason,
            "detected_to_elected_s": rel(self.elected),
            "detected_to_provider_done_s": {k: rel(v) for k, v in self.providers_done.items()},
            "detected_to_complete_s": rel(self.completed),
        }


class Reconciler:
    def __init__(
        self,
        providers: list[Provider],
        ctx: VipContext,
        config: Config,
        election: Election,
        stats: VipStats,
        *,
        clock: Callable[[], float],
        spawn: Spawn,
        apply: Callable[[list[Action]], None],
        after_up: Callable[[], None],
    ) -> None:
        self.pipeline = Pipeline(providers, observer=self.observe_provider)
        self.ctx = self._bind(ctx)
        self.config = config
        self.election = election
        self.stats = stats
        self.clock = clock
        self._spawn = spawn
        self._apply = apply
        self._after_up = after_up
        self.desired = State.BACKUP
        # --neutral: no down actions at start-up (ucarp skips only that downscript)
        self.applied: State | None = State.BACKUP if ctx.vip.neutral else None
        self.ready = False
        self.timeline: FailoverTimeline | None = None
        self.provider_failures = 0
        self.last_failure_at = 0.0
        self.last_failure: str | None = None
        self.stopping = False  # on shutdown the instance runs the down actions itself
        #: the runtime's housekeeping period (it calls housekeeping() on this grid)
        self.grid_s = 1.0
        self.lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._next_init_retry = 0.0
        self._next_check: dict[str, float] = {}
        self._checking = False

    async def start(self) -> None:
        # a restarted node's stale VIP goes first: after a kill -9 the kernel answers for
        # it until someone removes it, and the next Lease holder may already serve it
        # (docs/reliability.md); the usual start-up down() still follows the transition
        await self.pipeline.down_before_init(self.ctx)
        self.ready = not await self.pipeline.init()
        self._next_init_retry = self.clock() + INIT_RETRY_S
        self._spawn(self._worker())

    def want(self, state: State) -> None:
        self.desired = state
        if not self.stopping:
            self.wake.set()

    async def settle(self) -> None:
        """Until applied == desired and the worker is idle (shutdown waits on this)."""
        self.wake.set()
        while self.applied != self.desired or not self._idle.is_set():
            await asyncio.sleep(0.01)

    def _bind(self, ctx: VipContext) -> VipContext:
        # a hook still running after a demotion (a slow check) asks this before it
        # changes anything outside (vip_sidecar.providers.base.VipContext.is_master)
        ctx.is_master = self._wants_master
        return ctx

    def _wants_master(self) -> bool:
        return self.desired is State.MASTER

    async def swap_providers(self, ctx: VipContext, providers: list[Provider]) -> Pipeline:
        """Reload: new providers for a VIP that is BACKUP; returns the old pipeline."""
        async with self.lock:
            old = self.pipeline
            self.pipeline = Pipeline(providers, observer=self.observe_provider)
            self.ctx = self._bind(ctx)
            self.ready = not await self.pipeline.init()
            self.applied = None  # the new providers have not run down() yet
            self._next_check.clear()
        self.wake.set()
        return old

    # -- the worker ------------------------------------------------------------------
    async def _worker(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            self._idle.clear()
            try:
                while self.applied != self.desired:
                    async with self.lock:
                        await self._apply_desired()
            finally:
                self._idle.set()

    async def _apply_desired(self) -> None:
        if self.desired is not State.MASTER:
            await self.pipeline.down(self.ctx)
            self.applied = State.BACKUP
            return
        failure = await self.pipeline.up(self.ctx)
        if failure is not None:
            self.applied = State.BACKUP  # pipeline.up() already undid the partial work
            self.on_failure(failure)
            return
        self.applied = State.MASTER
        self.ready = True  # a provider that failed init() at start has recovered
        self._after_up()
        if self.timeline is not None:
            self.timeline.completed = self.clock()
            self.stats.observe_phase("complete", self.timeline.completed - self.timeline.detected)
        now = self.clock()
        for p in self.pipeline.providers:
            if p.reassert_interval is not None:
                self._next_check[p.name] = now + _jitter(p.reassert_interval)
        if self.desired is State.MASTER:
            self.provider_failures = 0
            self.election.set_demotion(0)

    # -- failures and backoff --------------------------------------------------------
    def on_failure(self, failure: ProviderFailure) -> None:
        hold = self.register_failure(f"{failure.provider} {failure.action}: {failure.error}")
        event(
            logging.ERROR,
            f"provider {failure.provider} failed to {failure.action} ({failure.error}); "
            f"demoting to advskew {self.election.advskew} and holding BACKUP for {hold:g}s",
            vip=self.ctx.vip.name,
            event="demote",
            provider=failure.provider,
            kind=failure.kind.value,
            hold_s=hold,
        )
        if not self.stopping:
            self._apply(self.election.step_down(Reason.STEP_DOWN, hold))

    def register_failure(self, what: str) -> float:
        """Count a failure (or a veto): demote the advskew and return the hold-down."""
        self.provider_failures += 1
        self.last_failure_at = self.clock()
        self.last_failure = what
        step = self.config.demote_step
        self.election.set_demotion(min(MAX_DEMOTION, step * self.provider_failures))
        return float(
            min(
                self.config.provider_hold_s * 2 ** (self.provider_failures - 1),
                self.config.provider_hold_max_s,
            )
        )

    # -- housekeeping: decay, init retries, checks -----------------------------------
    def housekeeping(self) -> None:
        now = self.clock()
        if not self.ready and now >= self._next_init_retry:
            self._next_init_retry = now + INIT_RETRY_S
            self._spawn(self._retry_init())
        if (
            self.provider_failures
            and self.election.state is State.BACKUP
            and now - self.last_failure_at > self.config.provider_hold_max_s
        ):
            self.provider_failures = 0
            self.election.set_demotion(0)
        if (
            self.election.state is State.MASTER
            and self.applied is State.MASTER
            and self.desired is State.MASTER
            and not self.lock.locked()
            and not self._checking
        ):
            due = [
                p
                for p in self.pipeline.providers
                if p.reassert_interval is not None and now >= self._next_check.get(p.name, 0)
            ]
            if due:
                # claim the slot now: a busy loop must not spawn the same check twice
                for p in due:
                    assert p.reassert_interval is not None
                    self._next_check[p.name] = now + _jitter(p.reassert_interval)
                self._checking = True
                self._spawn(self._run_checks(due))

    def check_now(self) -> None:
        """A worse master is advertising (partition healed, or a stale peer): re-verify."""
        for p in self.pipeline.providers:
            if p.reassert_interval is not None:
                self._next_check[p.name] = 0.0

    async def _retry_init(self) -> None:
        """/readyz must recover once IMDS or the apiserver comes back. Not under the
        worker lock: a promotion must never wait behind a slow init retry."""
        if not self.ready and not await self.pipeline.init():
            self.ready = True
            event(
                logging.INFO, "providers initialised (ready)", vip=self.ctx.vip.name, event="ready"
            )

    async def _run_checks(self, due: list[Provider]) -> None:
        try:
            async with self.lock:
                for p in due:
                    if self.desired is not State.MASTER or p.reassert_interval is None:
                        return
                    if not await self._check_one(p, p.reassert_interval):
                        return
        finally:
            self._checking = False

    async def _check_one(self, p: Provider, interval: float) -> bool:
        """One provider check(); False if it failed (the node then steps down)."""
        # the latest the next check() starts: one jittered period after this one was
        # scheduled, rounded up to the housekeeping grid
        within = interval * (1 + CHECK_JITTER) + self.grid_s
        self.ctx.timing = Timing(check_within_s=within, grid_s=self.grid_s)
        try:
            # asyncio.timeout, not wait_for: no task per check (an idle MASTER checks
            # every second, and each task costs the event loop extra passes)
            async with asyncio.timeout(p.timeout):
                repaired = await p.check(self.ctx)
        except Exception as exc:  # any failure to hold the VIP means step down
            error = "timed out" if isinstance(exc, TimeoutError) else f"{exc}"
            self.observe_provider(p.name, ProviderResult("check", False, 0.0, time.time(), error))
            # bow out first so the peer takes over now; the worker then runs the down
            # actions once the lock is released (applied is still MASTER)
            self.on_failure(ProviderFailure(p.name, "check", error, error_kind(exc)))
            return False
        if repaired:
            self.stats.repairs[p.name] += 1
            event(
                logging.WARNING,
                f"provider {p.name} repaired the VIP (drift found)",
                vip=self.ctx.vip.name,
                event="repair",
                provider=p.name,
            )
        return True

    def observe_provider(self, name: str, result: ProviderResult) -> None:
        self.stats.observe_provider(name, result.action, result.duration_s, result.ok)
        if result.action == "up" and result.ok and self.timeline is not None:
            done = self.clock()
            self.timeline.providers_done[name] = done
            self.stats.observe_phase(f"provider:{name}", done - self.timeline.detected)


def _jitter(period: float) -> float:
    return period * random.uniform(1 - CHECK_JITTER, 1 + CHECK_JITTER)
