"""The CARP election as a pure state machine (INIT/BACKUP/MASTER).

It owns no socket and never sleeps: the runtime feeds it adverts and clock ticks and
carries out the actions it returns. Rules follow ucarp 1.5.2 (src/carp.c), with
three deliberate extensions that stay wire-compatible:

* a promotion can be made to wait for confirmation (the pre-master veto of providers);
* a master that steps down or shuts down sends the OpenBSD bow-out advert
  (advbase=255, advskew=255) so any backup takes over at once;
* a demotion value (provider failures, operator request) is added to advskew, and a
  hold-down keeps a failed node from reclaiming before its backoff expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from vip_sidecar.carp import BOW_OUT, interval_us
from vip_sidecar.inet import IPAddress

US = 1_000_000
SEND_ERROR_SKEW = 240  # ucarp advertises this while its writes keep failing
SEND_ERROR_THRESHOLD = 3
EQUAL_WINDOW_S = 0.001  # ucarp sends an advert that is due within 1 ms now


class State(IntEnum):
    INIT = 0
    BACKUP = 1
    MASTER = 2


class Reason(StrEnum):
    STARTUP = "startup"
    MASTER_DOWN = "master_down"  # dead timer expired, nobody heard
    PREEMPT = "preempt"  # we are preferred and --preempt is on
    PEER_TIMING_OUT = "peer_timing_out"  # heard master is slower than our dead interval (bow-out)
    PREFERRED_MASTER = "preferred_master"  # two masters met, the other one wins
    STEP_DOWN = "step_down"  # provider failure / SIGUSR2
    OPERATOR = "operator"  # `vip-sidecar ctl demote`
    MAINTENANCE = "maintenance"  # `vip-sidecar ctl maintenance on`
    VETO = "veto"  # a provider refused the promotion
    CARRIER_LOST = "carrier_lost"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class SendAdvert:
    advbase: int
    advskew: int


@dataclass(frozen=True, slots=True)
class Transition:
    old: State
    new: State
    reason: Reason


@dataclass(frozen=True, slots=True)
class SendGarp:
    """A gratuitous ARP for the VIP: on promotion, on a worse master, and ucarp's
    second one two adverts after promotion."""


@dataclass(frozen=True, slots=True)
class RequestPromotion:
    """The election wants MASTER; answer with confirm_promotion(ticket) or
    refuse_promotion(ticket, hold). A ticket from an earlier request is ignored."""

    reason: Reason
    ticket: int = 0


@dataclass(frozen=True, slots=True)
class Reassert:
    """A worse master is advertising: re-check the VIP is still ours (cloud drift)."""

    peer: IPAddress


Action = SendAdvert | Transition | SendGarp | RequestPromotion | Reassert


@dataclass(frozen=True, slots=True)
class ElectionParams:
    src: IPAddress
    advbase: int = 1
    advskew: int = 0
    deadratio: int = 3
    preempt: bool = False
    confirm_promotions: bool = False

    def __post_init__(self) -> None:
        if not (0 <= self.advbase <= 255 and 0 <= self.advskew <= 255):
            raise ValueError("advbase and advskew must be 0..255")
        if self.advbase == 0 and self.advskew == 0:
            raise ValueError("advbase and advskew cannot both be 0")
        if self.deadratio < 1:
            raise ValueError("deadratio must be >= 1")


def ucarp_ip_lower(a: IPAddress, b: IPAddress) -> bool:
    """ucarp compares s_addr as a native integer: on little-endian hosts the last octet
    is most significant. Debian amd64/arm64 peers break ties this way (spec 3.5). IPv6
    sources (ucarp has none) are compared the same way, so one rule serves both."""
    return int.from_bytes(a.packed, "little") < int.from_bytes(b.packed, "little")


class Election:
    def __init__(self, params: ElectionParams, clock: Callable[[], float]) -> None:
        self.params = params
        self._clock = clock
        self.state = State.INIT
        self.demotion = 0
        self.hold_until = 0.0
        self.stopped = False
        self.carrier_up = True
        self.maintenance = False
        self.pending: Reason | None = None
        self._ticket = 0  # generation of the current promotion request
        self._advert_at: float | None = None
        self._dead_at: float | None = None
        self._delayed_garp = 0
        self._send_failures = 0
        self._send_successes = 0
        self._suppressed = False

    # -- derived values ---------------------------------------------------------------
    @property
    def advskew(self) -> int:
        """The advskew we advertise and compare with: configured + demotion, or 240 while
        our sends fail (ucarp's suppression), whichever is larger."""
        skew = min(255, self.params.advskew + self.demotion)
        if self._suppressed:
            skew = max(skew, SEND_ERROR_SKEW)
        return skew

    def interval_s(self) -> float:
        return interval_us(self.params.advbase, self.advskew) / US

    def dead_interval_s(self) -> float:
        p = self.params
        return (p.advbase * p.deadratio * US + (self.advskew * US) // 256) / US

    def next_deadline(self) -> float | None:
        # each timer only means something in its own state (a stale one must not spin)
        times = [
            t
            for t, state in ((self._advert_at, State.MASTER), (self._dead_at, State.BACKUP))
            if t is not None and self.state is state
        ]
        return min(times) if times else None

    # -- inputs -----------------------------------------------------------------------
    def start(self) -> list[Action]:
        if self.state is not State.INIT:
            return []
        self.state = State.BACKUP
        self._arm_dead_timer()
        return [Transition(State.INIT, State.BACKUP, Reason.STARTUP)]

    def on_advert(self, src: IPAddress, advbase: int, advskew: int) -> list[Action]:
        """A valid (authenticated) advertisement for our vhid from another node."""
        if self.state is State.INIT or self.stopped:
            return []
        local = interval_us(self.params.advbase, self.advskew)
        remote = interval_us(advbase, advskew)
        if self.state is State.MASTER:
            if local > remote or (local == remote and ucarp_ip_lower(src, self.params.src)):
                actions: list[Action] = [self._advert()]
                actions += self._enter_backup(Reason.PREFERRED_MASTER)
                return actions
            self._delayed_garp = 2
            return [SendGarp(), Reassert(src)]
        if self.params.preempt and local < remote:
            return self._master_down(Reason.PREEMPT)
        dead_local = self.params.advbase * self.params.deadratio * US + (self.advskew * US) // 256
        if dead_local < remote:
            return self._master_down(Reason.PEER_TIMING_OUT)
        self.pending = None
        self._arm_dead_timer()
        return []

    def tick(self) -> list[Action]:
        """Run whatever timers are due at the current clock."""
        now = self._clock()
        actions: list[Action] = []
        if self._dead_at is not None and now >= self._dead_at and self.state is State.BACKUP:
            self._dead_at = None
            actions += self._master_down(Reason.MASTER_DOWN)
        if (
            self._advert_at is not None
            and self.state is State.MASTER
            and now >= self._advert_at - EQUAL_WINDOW_S
        ):
            actions.append(self._advert())
            if self.params.advbase == BOW_OUT and self.params.advskew == BOW_OUT:
                self._advert_at = None  # ucarp: a 255/255 node sends a single advert
            else:
                nxt = self._advert_at + self.interval_s()
                # keep a fixed cadence; after a stall, restart it from now (no burst)
                self._advert_at = nxt if nxt > now else now + self.interval_s()
            if self._delayed_garp > 0:
                self._delayed_garp -= 1
                if self._delayed_garp == 0:
                    actions.append(SendGarp())
        return actions

    def confirm_promotion(self, ticket: int | None = None) -> list[Action]:
        if not self._answers_current(ticket) or self.state is not State.BACKUP or self.stopped:
            return []
        reason, self.pending = self.pending, None
        assert reason is not None
        return self._become_master(reason)

    def refuse_promotion(self, hold_s: float, ticket: int | None = None) -> list[Action]:
        """A provider vetoed: stay BACKUP and do not ask again before the hold expires."""
        if not self._answers_current(ticket):
            return []
        self.pending = None
        self.hold_until = max(self.hold_until, self._clock() + hold_s)
        self._arm_dead_timer()
        return []

    def _answers_current(self, ticket: int | None) -> bool:
        return self.pending is not None and (ticket is None or ticket == self._ticket)

    def step_down(
        self, reason: Reason, hold_s: float, *, dead_after_hold: bool = False
    ) -> list[Action]:
        """Leave MASTER now (provider failure, SIGUSR2, operator) and tell peers with a
        bow-out so the best backup takes over without waiting for its dead timer.

        dead_after_hold: the dead interval starts when the hold ends, not now. That is
        ucarp's SIGUSR2 (sleep(3), then carp_setrun() arms a fresh master-down timer):
        alone, a node is MASTER again after 3 s + 3 x advbase, 6 s at -b 1, 12 s at -b 3."""
        self.hold_until = max(self.hold_until, self._clock() + hold_s)
        self.pending = None
        if self.state is not State.MASTER:
            self._arm_dead_timer()
            return []
        actions = [SendAdvert(BOW_OUT, BOW_OUT), *self._enter_backup(reason)]
        if dead_after_hold and self._dead_at is not None:
            self._dead_at = self.hold_until + self.dead_interval_s()
        return actions

    def set_maintenance(self, on: bool) -> list[Action]:
        """Operator freeze: leave MASTER (bow-out) and never claim until switched off,
        whoever else is alive. Off: back to normal, a full dead interval from now."""
        self.maintenance = on
        if not on:
            self._arm_dead_timer()
            return []
        self.pending = None
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions = [SendAdvert(BOW_OUT, BOW_OUT), *self._enter_backup(Reason.MAINTENANCE)]
        self._dead_at = None
        return actions

    def shutdown(self) -> list[Action]:
        """Final step: bow out if MASTER, then never claim again."""
        actions: list[Action] = []
        if self.state is State.MASTER:
            actions = [SendAdvert(BOW_OUT, BOW_OUT), *self._enter_backup(Reason.SHUTDOWN)]
        self.stopped = True
        self.pending = None
        self._advert_at = self._dead_at = None
        return actions

    def set_carrier(self, up: bool) -> list[Action]:
        """Interface carrier changes (ucarp checks IFF_RUNNING every loop)."""
        if up == self.carrier_up or self.state is State.INIT:
            self.carrier_up = up
            return []
        self.carrier_up = up
        if not up:
            actions = self._enter_backup(Reason.CARRIER_LOST) if self.state is State.MASTER else []
            self.pending = None
            self._advert_at = self._dead_at = None
            return actions
        self._arm_dead_timer()
        return []

    def set_demotion(self, demotion: int) -> None:
        self.demotion = max(0, demotion)

    def send_result(self, ok: bool) -> None:
        """ucarp's send-error suppression: three failed writes advertise skew 240 until
        three writes succeed again (spec 3.9)."""
        if ok:
            self._send_failures = 0
            self._send_successes += 1
            if self._suppressed and self._send_successes >= SEND_ERROR_THRESHOLD:
                self._suppressed = False
        else:
            self._send_successes = 0
            self._send_failures += 1
            if self._send_failures >= SEND_ERROR_THRESHOLD:
                self._suppressed = True

    # -- internals --------------------------------------------------------------------
    def _advert(self) -> SendAdvert:
        return SendAdvert(self.params.advbase, self.advskew)

    def _arm_dead_timer(self) -> None:
        if (
            self.stopped
            or not self.carrier_up
            or self.maintenance
            or self.state is not State.BACKUP
        ):
            self._dead_at = None
            return
        self._dead_at = max(self._clock() + self.dead_interval_s(), self.hold_until)

    def _master_down(self, reason: Reason) -> list[Action]:
        if self.state is not State.BACKUP or self.stopped or not self.carrier_up:
            return []
        if self.maintenance:
            return []
        if self._clock() < self.hold_until:
            self._arm_dead_timer()  # retried once the hold-down expires
            return []
        if self.params.confirm_promotions:
            if self.pending is not None:
                return []
            self.pending = reason
            self._ticket += 1
            self._dead_at = None
            return [RequestPromotion(reason, self._ticket)]
        return self._become_master(reason)

    def _become_master(self, reason: Reason) -> list[Action]:
        self.state = State.MASTER
        self._dead_at = None
        self._advert_at = self._clock() + self.interval_s()
        self._delayed_garp = 2
        return [
            Transition(State.BACKUP, State.MASTER, reason),
            SendGarp(),
            self._advert(),
        ]

    def _enter_backup(self, reason: Reason) -> list[Action]:
        old = self.state
        self.state = State.BACKUP
        self._advert_at = None
        self._delayed_garp = 0
        self._arm_dead_timer()
        return [Transition(old, State.BACKUP, reason)]
