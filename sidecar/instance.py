"""One VIP: its election, its advert sender and the worker that runs its providers.

Flow: packet -> checks -> Election.on_advert -> actions. Actions that touch the wire
(adverts, GARPs) happen synchronously on the event loop; provider work happens in a
worker task that reconciles "applied" towards "desired" state, so a slow or hanging
provider never delays an advertisement.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from providers.base import Provider, Timing, VipContext, error_kind
from sidecar import carp
from sidecar.config import Config, VipConfig
from sidecar.counter import AdvertCounter, ReplayGuard
from sidecar.election import (
    Action,
    Election,
    ElectionParams,
    Reason,
    Reassert,
    RequestPromotion,
    SendAdvert,
    SendGarp,
    State,
    Transition,
)
from sidecar.log import RateLimitedWarnings, event
from sidecar.pipeline import Pipeline, ProviderFailure, ProviderResult
from sidecar.stats import VipStats
from sidecar.transport import InterfaceTransport

MAX_DEMOTION = 240  # BSD caps its demotion counter here; 255 is reserved for bow-out
INIT_RETRY_S = 15.0
CHECK_JITTER = 0.1  # provider checks run every reassert_interval +- 10 %

REASON_MESSAGES = {
    Reason.PREFERRED_MASTER: "Preferred master advertised: going back to BACKUP state",
    Reason.PREEMPT: "Putting MASTER down - preemption",
    Reason.PEER_TIMING_OUT: "Putting MASTER DOWN (going to time out)",
}


@dataclass
class MasterSeen:
    src: str
    advbase: int
    advskew: int
    at: float  # wall clock


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


class VipInstance:
    def __init__(
        self,
        cfg: VipConfig,
        config: Config,
        transport: InterfaceTransport,
        providers: list[Provider],
        node_name: str,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.cfg = cfg
        self.config = config
        self.transport = transport
        self.loop = asyncio.get_running_loop()
        self.clock = clock or self.loop.time
        self.stats = VipStats()
        self.pipeline = Pipeline(providers, observer=self._observe_provider)
        self.election = Election(
            ElectionParams(
                src=cfg.srcip,
                advbase=cfg.advbase,
                advskew=cfg.advskew,
                deadratio=cfg.deadratio,
                preempt=cfg.preempt,
                confirm_promotions=self.pipeline.can_veto,
            ),
            clock=self.clock,
        )
        self.auth = carp.Authenticator(cfg.password, cfg.vhid, cfg.addr)
        self.counter = AdvertCounter(monotonic=cfg.replay_protection)
        self.replay = ReplayGuard() if cfg.replay_protection else None
        self.ctx = VipContext(cfg, node_name)
        self.desired = State.BACKUP
        # --neutral: no down actions at start-up (ucarp skips only that downscript)
        self.applied: State | None = State.BACKUP if cfg.neutral else None
        self.since = time.time()
        self.last_reason = Reason.STARTUP.value
        self.master_seen: MasterSeen | None = None
        self.last_valid_advert = 0.0  # monotonic
        self.last_advert_sent = 0.0  # monotonic
        self.timeline: FailoverTimeline | None = None
        self.provider_failures = 0
        self.last_failure_at = 0.0
        self.last_failure: str | None = None
        self.ready = False
        self._next_init_retry = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._warn = RateLimitedWarnings()
        self._next_check: dict[str, float] = {}
        self._stopping = False
        self._garp_after_up = False
        self._checking = False
        self._veto_task: asyncio.Future[Any] | None = None
        #: the runtime's housekeeping period (it calls housekeeping() on this grid)
        self.grid_s = 1.0

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        failures = await self.pipeline.init()
        self.ready = not failures
        self._next_init_retry = self.clock() + INIT_RETRY_S
        self._spawn(self._worker())
        self.apply(self.election.start())

    async def stop(self, wait_for_new_master_s: float, deadline: float) -> None:
        """Graceful exit: bow out, wait (bounded) until a new master advertises, then run
        the down actions (make-before-break), then close providers. Every phase shares
        one deadline, so the whole exit fits in shutdown_timeout."""
        self._stopping = True
        was_master = self.election.state is State.MASTER

        def left(cap: float = float("inf")) -> float:
            return max(0.0, min(cap, deadline - self.clock()))

        bow_out: asyncio.Future[Any] | None = None
        if was_master:
            # release fences (a lease) just before the bow-out advert, so the successor
            # can claim the moment it hears it; we keep serving until it advertises
            bow_out = asyncio.ensure_future(self.pipeline.bow_out(self.ctx))
            await asyncio.wait({bow_out}, timeout=left(min(1.0, self.election.interval_s())))
        started = self.clock()
        self.apply(self.election.shutdown())
        if bow_out is not None:
            until = started + left(wait_for_new_master_s)
            resent = False
            while self.last_valid_advert <= started and self.clock() < until:
                if not resent and self.clock() >= started + self.election.interval_s():
                    self.send_advert(carp.BOW_OUT, carp.BOW_OUT)  # the first may be lost
                    resent = True
                await asyncio.sleep(0.005)
            await asyncio.wait({bow_out}, timeout=left())
            if not bow_out.done():
                bow_out.cancel()
        self.desired = State.BACKUP
        self._wake.set()
        try:
            await asyncio.wait_for(self._wait_settled(), timeout=left())
        except TimeoutError:
            event(
                logging.ERROR,
                "down actions did not finish before the shutdown timeout",
                vip=self.cfg.name,
                event="shutdown_timeout",
            )
        self._cancel_timer()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.pipeline.close(), timeout=max(0.5, left()))

    async def _wait_settled(self) -> None:
        while self.applied != self.desired or not self._idle.is_set():
            await asyncio.sleep(0.01)

    # -- actions ---------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        try:
            for action in actions:
                if isinstance(action, SendAdvert):
                    self.send_advert(action.advbase, action.advskew)
                elif isinstance(action, Transition):
                    self._on_transition(action)
                elif isinstance(action, SendGarp):
                    self.send_garp()
                elif isinstance(action, RequestPromotion):
                    self._on_promotion_request(action.reason, action.ticket)
                elif isinstance(action, Reassert):
                    self._on_reassert(action.peer)
        finally:
            # whatever happened above, the advert and dead timers must keep running
            self._reschedule()

    def send_advert(self, advbase: int, advskew: int) -> None:
        counter = self.counter.next()
        payload = carp.encode_carp(
            self.cfg.vhid, advbase, advskew, counter, self.auth.digest(counter)
        )
        errors: list[OSError] = []
        if self.cfg.peers:
            # one unreachable peer must not silence the adverts to the others
            for peer in self.cfg.peers:
                packet = carp.encode_ip(payload, self.cfg.srcip, peer, secrets.randbits(16))
                try:
                    self.transport.send_unicast(packet, peer)
                except OSError as exc:
                    errors.append(exc)
                    self._warn.warn(
                        f"write/{peer}",
                        f"write() to peer {peer} has failed: {exc.strerror or exc}",
                        vip=self.cfg.name,
                        event="send_error",
                        peer=str(peer),
                    )
            failed = len(errors) == len(self.cfg.peers)
        else:
            packet = carp.encode_ip(payload, self.cfg.srcip, self.cfg.mcast, secrets.randbits(16))
            try:
                self.transport.send_multicast(
                    packet,
                    self.cfg.vhid,
                    self.cfg.mcast,
                    broadcast=self.cfg.nomcast,
                    real_mac=self.cfg.real_mac,
                )
            except OSError as exc:
                errors.append(exc)
                self._warn.warn(
                    "write",
                    f"write() has failed: {exc.strerror or exc}",
                    vip=self.cfg.name,
                    event="send_error",
                )
            failed = bool(errors)
        self.stats.send_errors += len(errors)
        self.election.send_result(not failed)
        if failed:
            return
        self.stats.adverts_sent += 1
        self.last_advert_sent = self.clock()

    def send_garp(self) -> None:
        """ucarp's GARP schedule. Like ucarp, the first one follows the up actions (an up
        script adds the address): before that it is only remembered. When a provider owns
        the address it also owns the announcement (alias GARPs after adding it)."""
        if not self.cfg.garp:
            return
        if self.applied is not State.MASTER:
            self._garp_after_up = True
            return
        if self.pipeline.announces:
            for p in self.pipeline.providers:
                if p.announces:
                    p.announce()
            return
        try:
            self.transport.send_frame(carp.encode_garp(self.transport.mac, self.cfg.addr))
        except OSError as exc:
            self._warn.warn(
                "garp",
                f"gratuitous ARP failed: {exc.strerror or exc}",
                vip=self.cfg.name,
                event="garp_error",
            )

    # -- receive ---------------------------------------------------------------------
    def on_packet(self, pkt: carp.Packet) -> carp.DropReason | None:
        reason = self._check(pkt)
        if reason is not None:
            self.stats.drops[reason.value] += 1
            return reason
        adv = pkt.adv
        if self.replay is not None:
            self.replay.accept(pkt.src, adv.counter)
        self.counter.heard(adv.counter)
        self.stats.adverts_received += 1
        self.last_valid_advert = self.clock()
        self.master_seen = MasterSeen(str(pkt.src), adv.advbase, adv.advskew, time.time())
        self.apply(self.election.on_advert(pkt.src, adv.advbase, adv.advskew))
        return None

    def _check(self, pkt: carp.Packet) -> carp.DropReason | None:
        """ucarp's receive checks 8-10 plus our unicast and replay extensions, in order."""
        cfg, adv = self.cfg, pkt.adv
        if cfg.peers and pkt.src not in cfg.peers:
            return self._reject(
                pkt,
                carp.DropReason.NOT_A_PEER,
                f"advert from {pkt.src}, which is not a configured peer",
            )
        if pkt.dst != cfg.mcast and not (cfg.peers and pkt.dst == cfg.srcip):
            return carp.DropReason.WRONG_GROUP  # ucarp: debug only (other groups are normal)
        if carp.internet_checksum(pkt.checked_bytes) != 0:
            return self._reject(pkt, carp.DropReason.BAD_CHECKSUM, "Bad IP checksum")
        expected = self.auth.digest(adv.counter)
        if not hmac.compare_digest(expected, adv.digest):
            return self._reject(
                pkt,
                carp.DropReason.BAD_DIGEST,
                f"Bad digest - md2=[{expected[:4].hex()}...] md=[{adv.digest[:4].hex()}...] - "
                "Check vhid, password and virtual IP address",
            )
        if self.replay is not None and not self.replay.fresh(pkt.src, adv.counter):
            return self._reject(
                pkt, carp.DropReason.REPLAY, f"replayed advert from {pkt.src} (stale counter)"
            )
        return None

    def _reject(self, pkt: carp.Packet, reason: carp.DropReason, message: str) -> carp.DropReason:
        # ucarp warns for every bad packet; a flood of warnings is itself an outage
        self._warn.warn(
            reason.value,
            message,
            vip=self.cfg.name,
            event="drop",
            reason=reason.value,
            src=str(pkt.src),
        )
        return reason

    # -- timers ----------------------------------------------------------------------
    def _reschedule(self) -> None:
        deadline = self.election.next_deadline()
        if deadline == self._timer_at:
            return
        self._cancel_timer()
        if deadline is not None:
            self._timer_at = deadline
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_at = None

    def _on_timer(self, scheduled: float) -> None:
        self._timer = None
        self._timer_at = None
        was_master = self.election.state is State.MASTER
        actions = self.election.tick()
        if was_master and any(isinstance(a, SendAdvert) for a in actions):
            self.stats.observe_lateness(max(0.0, self.clock() - scheduled))
        self.apply(actions)

    # -- transitions and providers ---------------------------------------------------
    def _on_transition(self, t: Transition) -> None:
        now = self.clock()
        msg = REASON_MESSAGES.get(t.reason)
        event(
            logging.WARNING,
            f"Switching to state: {t.new.name}",
            vip=self.cfg.name,
            vhid=self.cfg.vhid,
            interface=self.cfg.interface,
            event="transition",
            old=t.old.name,
            new=t.new.name,
            reason=t.reason.value,
        )
        if msg:
            event(logging.WARNING, msg, vip=self.cfg.name, event="election", reason=t.reason.value)
        self.stats.transitions[(t.old.name, t.new.name, t.reason.value)] += 1
        self.since = time.time()
        self.last_reason = t.reason.value
        if t.new is State.MASTER:
            self.ctx.epoch += 1
            self.ctx.reason = t.reason.value
            if self.timeline is None or self.timeline.elected is not None:
                self.timeline = FailoverTimeline(t.reason.value, detected=now)
            self.timeline.elected = now
            self.stats.observe_phase("elected", now - self.timeline.detected)
        self.desired = t.new
        if not self._stopping:  # on shutdown, stop() runs the down actions make-before-break
            self._wake.set()

    def _on_promotion_request(self, reason: Reason, ticket: int) -> None:
        self.timeline = FailoverTimeline(reason.value, detected=self.clock())
        # only asked when a provider can veto (ElectionParams.confirm_promotions)
        if self._veto_task is not None and not self._veto_task.done():
            self._veto_task.cancel()  # its answer would be for a void request anyway
        self._veto_task = self._spawn(self._decide_promotion(ticket))

    async def _decide_promotion(self, ticket: int) -> None:
        refusal = await self.pipeline.pre_master(self.ctx)
        if self.election.pending is None:
            return  # a live master was heard meanwhile: nothing to answer
        if refusal is None:
            self.apply(self.election.confirm_promotion(ticket))
            return
        self.stats.vetoes += 1
        hold = self._register_failure(f"promotion vetoed by {refusal}")
        event(
            logging.WARNING,
            f"promotion refused by provider {refusal}; staying BACKUP",
            vip=self.cfg.name,
            event="veto",
            refusal=refusal,
            hold_s=hold,
        )
        self.apply(self.election.refuse_promotion(hold, ticket))

    def _on_reassert(self, peer: IPv4Address) -> None:
        # a worse master is advertising (partition healed, or a stale peer): re-verify now
        for p in self.pipeline.providers:
            if p.reassert_interval is not None:
                self._next_check[p.name] = 0.0

    async def _worker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._idle.clear()
            try:
                while self.applied != self.desired:
                    async with self._lock:
                        await self._apply_desired()
            finally:
                self._idle.set()

    async def _apply_desired(self) -> None:
        target = self.desired
        if target is State.MASTER:
            failure = await self.pipeline.up(self.ctx)
            if failure is not None:
                self.applied = State.BACKUP  # pipeline.up() already undid the partial work
                self._on_provider_failure(failure)
                return
            self.applied = State.MASTER
            self.ready = True  # a provider that failed init() at start has recovered
            if self._garp_after_up:
                self._garp_after_up = False
                if not self.pipeline.announces:
                    self.send_garp()
            if self.timeline is not None:
                self.timeline.completed = self.clock()
                self.stats.observe_phase(
                    "complete", self.timeline.completed - self.timeline.detected
                )
            now = self.clock()
            for p in self.pipeline.providers:
                if p.reassert_interval is not None:
                    self._next_check[p.name] = now + _jitter(p.reassert_interval)
            if self.desired is State.MASTER:
                self.provider_failures = 0
                self.election.set_demotion(0)
        else:
            await self.pipeline.down(self.ctx)
            self.applied = State.BACKUP

    def _on_provider_failure(self, failure: ProviderFailure) -> None:
        hold = self._register_failure(f"{failure.provider} {failure.action}: {failure.error}")
        event(
            logging.ERROR,
            f"provider {failure.provider} failed to {failure.action} ({failure.error}); "
            f"demoting to advskew {self.election.advskew} and holding BACKUP for {hold:g}s",
            vip=self.cfg.name,
            event="demote",
            provider=failure.provider,
            hold_s=hold,
        )
        if not self._stopping:
            self.apply(self.election.step_down(Reason.STEP_DOWN, hold))

    def _register_failure(self, what: str) -> float:
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

    def housekeeping(self) -> None:
        """Called about once a second: demotion decay, init retries, provider checks."""
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
            and not self._lock.locked()
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

    async def _retry_init(self) -> None:
        """/readyz must recover once IMDS or the apiserver comes back. Not under the
        worker lock: a promotion must never wait behind a slow init retry."""
        if not self.ready and not await self.pipeline.init():
            self.ready = True
            event(logging.INFO, "providers initialised (ready)", vip=self.cfg.name, event="ready")

    async def _run_checks(self, due: list[Provider]) -> None:
        try:
            await self._run_checks_locked(due)
        finally:
            self._checking = False

    async def _run_checks_locked(self, due: list[Provider]) -> None:
        async with self._lock:
            for p in due:
                if self.desired is not State.MASTER or p.reassert_interval is None:
                    return
                # the latest the next check() starts: one jittered period after this
                # one was scheduled, rounded up to the housekeeping grid
                within = p.reassert_interval * (1 + CHECK_JITTER) + self.grid_s
                self.ctx.timing = Timing(check_within_s=within, grid_s=self.grid_s)
                try:
                    repaired = await asyncio.wait_for(p.check(self.ctx), timeout=p.timeout)
                except Exception as exc:  # any failure to hold the VIP means step down
                    error = "timed out" if isinstance(exc, TimeoutError) else f"{exc}"
                    self._observe_provider(
                        p.name, ProviderResult("check", False, 0.0, time.time(), error)
                    )
                    # bow out first so the peer takes over now; the worker then runs the
                    # down actions once this lock is released (applied is still MASTER)
                    failure = ProviderFailure(p.name, "check", error, error_kind(exc))
                    self._on_provider_failure(failure)
                    return
                if repaired:
                    self.stats.repairs[p.name] += 1
                    event(
                        logging.WARNING,
                        f"provider {p.name} repaired the VIP (drift found)",
                        vip=self.cfg.name,
                        event="repair",
                        provider=p.name,
                    )

    def _observe_provider(self, name: str, result: ProviderResult) -> None:
        self.stats.observe_provider(name, result.action, result.duration_s, result.ok)
        if result.action == "up" and result.ok and self.timeline is not None:
            done = self.clock()
            self.timeline.providers_done[name] = done
            self.stats.observe_phase(f"provider:{name}", done - self.timeline.detected)

    def _spawn(self, coro: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            event(
                logging.ERROR,
                f"internal task failed: {task.exception()!r}",
                vip=self.cfg.name,
                event="internal_error",
            )

    # -- operator control ------------------------------------------------------------
    def operator_demote(self, hold_s: float) -> bool:
        """Planned move: bow out now and stay BACKUP for hold_s; False if not MASTER."""
        if self.election.state is not State.MASTER:
            return False
        event(
            logging.WARNING,
            f"operator demotion: stepping down, holding BACKUP {hold_s:g}s",
            vip=self.cfg.name,
            event="operator_demote",
            hold_s=hold_s,
        )
        self.apply(self.election.step_down(Reason.OPERATOR, hold_s))
        return True

    def set_maintenance(self, on: bool) -> None:
        event(
            logging.WARNING,
            f"maintenance {'on: never claiming' if on else 'off'}",
            vip=self.cfg.name,
            event="maintenance",
            on=on,
        )
        self.apply(self.election.set_maintenance(on))

    # -- views -----------------------------------------------------------------------
    def state_line(self) -> str:
        """ucarp's SIGUSR1 line."""
        state = "MASTER" if self.election.state is State.MASTER else "BACKUP"
        return f"{state} on {self.cfg.interface} id {self.cfg.vhid}"

    def status(self) -> dict[str, Any]:
        e = self.election
        return {
            "name": self.cfg.name,
            "vhid": self.cfg.vhid,
            "interface": self.cfg.interface,
            "addr": self.cfg.addr_text,
            "srcip": str(self.cfg.srcip),
            "state": e.state.name,
            "applied": self.applied.name if self.applied else None,
            "since": self.since,
            "last_reason": self.last_reason,
            "advbase": self.cfg.advbase,
            "advskew": e.advskew,
            "demotion": e.demotion,
            "maintenance": e.maintenance,
            "hold_down_s": max(0.0, round(e.hold_until - self.clock(), 3)),
            "master_seen": None if self.master_seen is None else vars(self.master_seen),
            "mode": "unicast"
            if self.cfg.peers
            else ("broadcast" if self.cfg.nomcast else "multicast"),
            "peers": [str(p) for p in self.cfg.peers],
            "counters": self.stats.as_dict(),
            "providers": {p.name: self._provider_status(p) for p in self.pipeline.providers},
            "last_failover": None if self.timeline is None else self.timeline.as_dict(),
            "last_failure": self.last_failure,
            "ready": self.ready,
        }

    def _provider_status(self, p: Provider) -> dict[str, Any]:
        result = self.pipeline.results.get(p.name)
        return {
            "last": vars(result) if result is not None else None,
            "details": provider_details(p),
        }


def provider_details(p: Provider) -> dict[str, Any]:
    """A provider's status(); a bug in it must not break /status or a scrape."""
    try:
        return p.status()
    except Exception as exc:
        return {"error": repr(exc)}


def _jitter(period: float) -> float:
    return period * random.uniform(1 - CHECK_JITTER, 1 + CHECK_JITTER)
