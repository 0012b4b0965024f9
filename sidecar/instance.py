"""One VIP: wires its speaker, its election and its reconciler.

Flow: packet -> Speaker.receive (checks) -> Election.on_advert -> actions. Actions that
touch the wire (adverts, GARPs) happen synchronously on the event loop through the
speaker; state changes go to the reconciler, whose worker task runs the providers, so
a slow or hanging provider never delays an advertisement. This module also owns the
election's timer, the veto round-trip of a promotion, the graceful exit and the
operator controls; the /status view is vip_sidecar.status_view.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from vip_sidecar import carp
from vip_sidecar.config import Config, VipConfig
from vip_sidecar.election import (
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
from vip_sidecar.log import event
from vip_sidecar.pipeline import Pipeline
from vip_sidecar.providers.base import Provider, VipContext
from vip_sidecar.reconciler import FailoverTimeline, Reconciler
from vip_sidecar.speaker import MasterSeen, Speaker
from vip_sidecar.stats import VipStats
from vip_sidecar.status_view import vip_status
from vip_sidecar.transport import InterfaceTransport

REASON_MESSAGES = {
    Reason.PREFERRED_MASTER: "Preferred master advertised: going back to BACKUP state",
    Reason.PREEMPT: "Putting MASTER down - preemption",
    Reason.PEER_TIMING_OUT: "Putting MASTER DOWN (going to time out)",
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
        self.loop = asyncio.get_running_loop()
        self.clock = clock or self.loop.time
        self.stats = VipStats()
        self.speaker = Speaker(cfg, transport, self.stats, self.clock)
        # the runtime confirms promotions when a provider can refuse them (pre_master)
        can_veto = any(p.can_veto for p in providers)
        self.election = Election(_params(cfg, confirm_promotions=can_veto), clock=self.clock)
        self.reconciler = Reconciler(
            providers,
            VipContext(cfg, node_name),
            config,
            self.election,
            self.stats,
            clock=self.clock,
            spawn=self._spawn,
            apply=self.apply,
            after_up=self._after_up,
        )
        self.since = time.time()
        self.last_reason = Reason.STARTUP.value
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self._garp_after_up = False
        self._veto_task: asyncio.Future[Any] | None = None

    # -- what the runtime, /status and reload read ---------------------------------------
    @property
    def pipeline(self) -> Pipeline:
        return self.reconciler.pipeline

    @property
    def config(self) -> Config:
        return self.reconciler.config

    @config.setter
    def config(self, config: Config) -> None:
        self.reconciler.config = config

    @property
    def transport(self) -> InterfaceTransport:
        return self.speaker.transport

    @transport.setter
    def transport(self, transport: InterfaceTransport) -> None:
        self.speaker.transport = transport  # the interface was re-created

    @property
    def ready(self) -> bool:
        return self.reconciler.ready

    @property
    def applied(self) -> State | None:
        return self.reconciler.applied

    @property
    def desired(self) -> State:
        return self.reconciler.desired

    @property
    def master_seen(self) -> MasterSeen | None:
        return self.speaker.master_seen

    @property
    def last_advert_sent(self) -> float:
        return self.speaker.last_advert_sent

    @property
    def timeline(self) -> FailoverTimeline | None:
        return self.reconciler.timeline

    @property
    def grid_s(self) -> float:
        return self.reconciler.grid_s

    @grid_s.setter
    def grid_s(self, seconds: float) -> None:
        self.reconciler.grid_s = seconds

    # -- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        await self.reconciler.start()
        self.apply(self.election.start())

    async def stop(self, wait_for_new_master_s: float, deadline: float) -> None:
        """Graceful exit: bow out, wait (bounded) until a new master advertises, then run
        the down actions (make-before-break), then close providers. Every phase shares
        one deadline, so the whole exit fits in shutdown_timeout."""
        self.reconciler.stopping = True
        was_master = self.election.state is State.MASTER

        def left(cap: float = float("inf")) -> float:
            return max(0.0, min(cap, deadline - self.clock()))

        bow_out: asyncio.Future[Any] | None = None
        if was_master:
            # release fences (a lease) just before the bow-out advert, so the successor
            # can claim the moment it hears it; we keep serving until it advertises
            bow_out = asyncio.ensure_future(self.pipeline.bow_out(self.reconciler.ctx))
            await asyncio.wait({bow_out}, timeout=left(min(1.0, self.election.interval_s())))
        started = self.clock()
        self.apply(self.election.shutdown())
        if bow_out is not None:
            until = started + left(wait_for_new_master_s)
            resent = False
            while self.speaker.last_valid_advert <= started and self.clock() < until:
                if not resent and self.clock() >= started + self.election.interval_s():
                    self.send_advert(carp.BOW_OUT, carp.BOW_OUT)  # the first may be lost
                    resent = True
                await asyncio.sleep(0.005)
            await asyncio.wait({bow_out}, timeout=left())
            if not bow_out.done():
                bow_out.cancel()
        self.reconciler.desired = State.BACKUP
        try:
            await asyncio.wait_for(self.reconciler.settle(), timeout=left())
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

    async def swap_providers(self, vip: VipConfig, providers: list[Provider]) -> Pipeline:
        """Reload: new providers (and VIP settings) for a settled BACKUP; returns the old
        pipeline for the caller to close, then to call reconcile()."""
        self.cfg = self.speaker.cfg = vip
        ctx = dataclasses.replace(self.reconciler.ctx, vip=vip)  # keeps the fencing epoch
        old = await self.reconciler.swap_providers(ctx, providers)
        self.election.params = dataclasses.replace(
            self.election.params, confirm_promotions=self.pipeline.can_veto
        )
        return old

    def reconcile(self) -> None:
        self.reconciler.wake.set()

    def housekeeping(self) -> None:
        """Called on the runtime's housekeeping grid: demotion decay, init retries,
        provider checks."""
        self.reconciler.housekeeping()

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
                    self.reconciler.check_now()
        finally:
            # whatever happened above, the advert and dead timers must keep running
            self._reschedule()

    def send_advert(self, advbase: int, advskew: int) -> None:
        self.election.send_result(self.speaker.send_advert(advbase, advskew))

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
        self.speaker.send_garp()

    def _after_up(self) -> None:
        if self._garp_after_up:
            self._garp_after_up = False
            if not self.pipeline.announces:
                self.send_garp()

    # -- receive ---------------------------------------------------------------------
    def on_packet(self, pkt: carp.Packet) -> carp.DropReason | None:
        reason = self.speaker.receive(pkt)
        if reason is None:
            adv = pkt.adv
            self.apply(self.election.on_advert(pkt.src, adv.advbase, adv.advskew))
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

    def timer_at(self) -> float | None:
        """When the protocol timer (the next advert of a MASTER) fires, loop time."""
        return self._timer_at if self._timer is not None else None

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

    # -- transitions and promotions ----------------------------------------------------
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
        rec = self.reconciler
        if t.new is State.MASTER:
            rec.ctx.epoch += 1
            rec.ctx.reason = t.reason.value
            if rec.timeline is None or rec.timeline.elected is not None:
                rec.timeline = FailoverTimeline(t.reason.value, detected=now)
            rec.timeline.elected = now
            self.stats.observe_phase("elected", now - rec.timeline.detected)
        # on shutdown, stop() runs the down actions make-before-break
        rec.want(t.new)

    def _on_promotion_request(self, reason: Reason, ticket: int) -> None:
        self.reconciler.timeline = FailoverTimeline(reason.value, detected=self.clock())
        # only asked when a provider can veto (ElectionParams.confirm_promotions)
        if self._veto_task is not None and not self._veto_task.done():
            self._veto_task.cancel()  # its answer would be for a void request anyway
        self._veto_task = self._spawn(self._decide_promotion(ticket))

    async def _decide_promotion(self, ticket: int) -> None:
        refusal = await self.pipeline.pre_master(self.reconciler.ctx)
        if self.election.pending is None:
            return  # a live master was heard meanwhile: nothing to answer
        if refusal is None:
            self.apply(self.election.confirm_promotion(ticket))
            return
        self.stats.vetoes += 1
        hold = self.reconciler.register_failure(f"promotion vetoed by {refusal}")
        event(
            logging.WARNING,
            f"promotion refused by provider {refusal}; staying BACKUP",
            vip=self.cfg.name,
            event="veto",
            refusal=refusal,
            hold_s=hold,
        )
        self.apply(self.election.refuse_promotion(hold, ticket))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Future[Any]:
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
        return vip_status(self)


def _params(cfg: VipConfig, *, confirm_promotions: bool) -> ElectionParams:
    return ElectionParams(
        src=cfg.srcip,
        advbase=cfg.advbase,
        advskew=cfg.advskew,
        deadratio=cfg.deadratio,
        preempt=cfg.preempt,
        confirm_promotions=confirm_promotions,
    )
