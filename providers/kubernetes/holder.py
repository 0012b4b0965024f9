"""The lease holder: acquire, renew and release one coordination.k8s.io/v1 Lease.

The pure rules (who may take a lease, when a term ends, what an outage allows) are in
vip_sidecar.providers.kubernetes.lease; this class owns the state of our tenure and the API calls.
Writes use resourceVersion optimistic concurrency: a 409 means someone else wrote
first, and reading again decides who won.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any

from vip_sidecar.config import VipConfig
from vip_sidecar.log import RateLimitedWarnings, event
from vip_sidecar.providers.base import OwnershipLost, Timing, Veto
from vip_sidecar.providers.kubernetes.api import ApiFailure, KubeApi, KubeApiError
from vip_sidecar.providers.kubernetes.lease import (
    ANNOTATION_NODE,
    ANNOTATION_POD,
    ANNOTATION_VIP,
    LeaseObserver,
    LeaseRecord,
    Standing,
    acquired,
    judge,
    outage_verdict,
    released,
)
from vip_sidecar.providers.kubernetes.options import POLL_S, Options

#: backoff between retries of a transient error while acquiring (doubling, capped);
#: a Retry-After from the apiserver overrides it when longer
RETRY_FIRST_S = 0.25
RETRY_MAX_S = 2.0


class LeaseRefused(Veto):
    """Another node holds the lease (or won the race for it)."""


class LeaseLost(OwnershipLost):
    """While MASTER, the lease turned out to belong to someone else (or our term ran
    out while the apiserver could not be reached)."""


class LeaseHolder:
    def __init__(
        self,
        opts: Options,
        vip: VipConfig,
        *,
        clock: Callable[[], float],
        wall: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]],
        warn: RateLimitedWarnings,
    ) -> None:
        self.opts = opts
        self.vip = vip
        self.namespace = opts.namespace or "default"  # the client may discover it
        self._clock = clock
        self._wall = wall
        self._sleep = sleep
        self._warn = warn
        self.observer = LeaseObserver()
        self.record: LeaseRecord | None = None
        self.held = False
        self.valid_until = 0.0
        self.last_renew = float("-inf")
        self.outage_since: float | None = None
        #: no renewal is attempted before this (monotonic): the apiserver's Retry-After
        self.not_before = float("-inf")
        self.retries = 0  # transient errors retried while acquiring (for /status)
        self.last_error: KubeApiError | None = None  # of the renewal that failed last
        #: (pod, node) of a holder whose term we took over: it may still say `master`
        self.stale_holder: tuple[str | None, str | None] | None = None
        self.lock = asyncio.Lock()

    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.opts.lease_name}"

    def _annotations(self) -> dict[str, str]:
        notes = {ANNOTATION_VIP: f"{self.vip.name} {self.vip.addr_text} vhid {self.vip.vhid}"}
        if self.opts.pod_name:
            notes[ANNOTATION_POD] = self.opts.pod_name
        if self.opts.node_name:
            notes[ANNOTATION_NODE] = self.opts.node_name
        return notes

    def claim_body(self, record: LeaseRecord | None) -> dict[str, Any]:
        """The Lease object that makes us the holder (acquire, renew and its dry run)."""
        return acquired(
            record,
            self.opts.identity,
            now_wall=self._wall(),
            duration_s=self.opts.lease_duration,
            annotations=self._annotations(),
        ).to_object(self.opts.lease_name, self.namespace)

    async def read(self, api: KubeApi) -> LeaseRecord | None:
        obj = await api.get_lease(self.opts.lease_name)
        return LeaseRecord.from_object(obj) if obj is not None else None

    async def acquire(self, api: KubeApi, wait_s: float, budget_s: float = 0.0) -> float:
        """Take the lease, waiting up to wait_s for another holder's term to end.

        Transient API errors (unreachable, timeout, 429, 5xx) are retried with backoff
        (and the apiserver's Retry-After) while a new request can still end within
        budget_s of the start; the last one is raised when it cannot. Returns the seconds
        spent waiting; raises LeaseRefused or KubeApiError."""
        started = self._clock()
        deadline = started + wait_s
        hard_end = started + max(budget_s, wait_s)
        seen: tuple[str, str | None] | None = None  # (holder, resourceVersion) when we began
        lost_race = False
        backoff = RETRY_FIRST_S
        while True:
            try:
                record = await self.read(api)
            except KubeApiError as exc:
                backoff = await self._retry_or_raise(exc, backoff, hard_end)
                continue
            now = self._clock()
            verdict = judge(
                record,
                self.opts.identity,
                now_mono=now,
                observed_since=self.observer.see(record, now),
            )
            if verdict.standing is Standing.HELD:
                assert record is not None and record.holder is not None
                if lost_race:
                    raise LeaseRefused(
                        f"409 Conflict on lease {self.lease_ref}: {record.holder} took it "
                        "at the same moment"
                    )
                if seen is not None and seen != (record.holder, record.resource_version):
                    raise LeaseRefused(
                        f"lease {self.lease_ref} is held by {record.holder}, which renewed "
                        "it while we waited: the holder is alive"
                    )
                seen = (record.holder, record.resource_version)
                left = deadline - now
                if verdict.remaining_s > left:
                    raise LeaseRefused(f"lease {self.lease_ref} is {verdict.detail}")
                await self._sleep(max(0.01, min(POLL_S, verdict.remaining_s, left)))
                continue
            body = self.claim_body(record)
            write_started = self._clock()
            try:
                if record is None:
                    written = await api.create_lease(body)
                else:
                    written = await api.update_lease(self.opts.lease_name, body)
            except KubeApiError as exc:
                if exc.unavailable:
                    # the write may or may not have landed: read again, a lease that
                    # names us is renewed like any of ours
                    backoff = await self._retry_or_raise(exc, backoff, hard_end)
                    continue
                if exc.failure is not ApiFailure.CONFLICT or lost_race:
                    if exc.failure is ApiFailure.CONFLICT:
                        raise LeaseRefused(
                            f"409 Conflict on lease {self.lease_ref} twice: another node "
                            "keeps writing it"
                        ) from None
                    raise
                lost_race = True  # read again: who won decides
                continue
            self.took(written, write_started, record)
            return write_started - started

    async def _retry_or_raise(self, exc: KubeApiError, backoff: float, hard_end: float) -> float:
        """Sleep before retrying a transient error, or raise it if no request started
        after the sleep could end by hard_end. Returns the next backoff."""
        if not exc.unavailable:
            raise exc
        pause = max(backoff, exc.retry_after or 0.0)
        # a call may run 1 s past request_timeout (the wait_for backstop)
        if self._clock() + pause + self.opts.request_timeout + 1.0 > hard_end:
            raise exc
        self.retries += 1
        self._warn.warn(
            "acquire_retry",
            f"kubernetes: lease {self.lease_ref}: {exc}; retrying in {pause:.1f}s "
            "within the promotion budget",
            vip=self.vip.name,
            event="k8s_retry",
        )
        await self._sleep(pause)
        return min(backoff * 2, RETRY_MAX_S)

    def took(
        self, written: Mapping[str, Any], write_started: float, previous: LeaseRecord | None
    ) -> None:
        self.record = LeaseRecord.from_object(written)
        self.held = True
        # our tenure counts from *before* the write: never longer than the term a peer
        # computes from the renewTime we stamped, whatever the clocks say
        self.valid_until = write_started + self.opts.lease_duration
        self.last_renew = write_started
        self.outage_since = None
        self.last_error = None
        self.not_before = float("-inf")
        if previous is not None and previous.holder and previous.holder != self.opts.identity:
            pod = previous.annotations.get(ANNOTATION_POD)
            node = previous.annotations.get(ANNOTATION_NODE)
            self.stale_holder = (
                pod if pod != self.opts.pod_name else None,
                node if node != self.opts.node_name else None,
            )
            event(
                logging.WARNING,
                f"kubernetes: took over lease {self.lease_ref} from {previous.holder} "
                f"(its term had run out); leaseTransitions={self.record.transitions}",
                vip=self.vip.name,
                event="k8s_lease_takeover",
                previous=previous.holder,
                transitions=self.record.transitions,
            )
        else:
            event(
                logging.INFO,
                f"kubernetes: holding lease {self.lease_ref} "
                f"(leaseTransitions={self.record.transitions})",
                vip=self.vip.name,
                event="k8s_lease_acquired",
                transitions=self.record.transitions,
            )

    async def renew(self, api: KubeApi, started: float) -> None:
        record = self.record
        if not self.held or record is None:
            raise LeaseLost(f"lease {self.lease_ref} is not held by us")
        for attempt in (1, 2):
            body = self.claim_body(record)
            try:
                written = await api.update_lease(self.opts.lease_name, body)
                break
            except KubeApiError as exc:
                if exc.failure is ApiFailure.NOT_FOUND:
                    # deleted under us: our term is still running, so re-create it;
                    # if someone else created it first, create() says 409 and we lose
                    body["metadata"].pop("resourceVersion", None)
                    try:
                        written = await api.create_lease(body)
                    except KubeApiError as again:
                        if again.failure is ApiFailure.CONFLICT:
                            raise LeaseLost(
                                f"lease {self.lease_ref} was deleted and re-created by another node"
                            ) from None
                        raise
                    break
                if exc.failure is not ApiFailure.CONFLICT:
                    raise
                current = await self.read(api)
                if current is None or current.holder != self.opts.identity:
                    holder = current.holder if current is not None else None
                    raise LeaseLost(
                        f"lease {self.lease_ref} is now held by {holder or 'nobody'}"
                    ) from None
                if attempt == 2:
                    raise LeaseLost(f"409 Conflict renewing lease {self.lease_ref} twice") from None
                record = current  # someone edited it (annotations?): still ours, retry
        self.record = LeaseRecord.from_object(written)
        self.valid_until = started + self.opts.lease_duration

    def decision_latency(self, check_started: float, timing: Timing) -> float:
        """How long from now until the next check() can decide: the runtime tells us
        when it starts at the latest (timing.check_within_s after this one started),
        and it may spend a full request timeout before deciding."""
        within = timing.check_within_s
        if within is None:  # not called from the runtime's check schedule: assume its
            # schedule (our tick plus 10 % jitter, on the housekeeping grid)
            within = 1.1 * self.opts.tick_s + timing.grid_s
        next_decision = check_started + within + self.opts.request_timeout
        return max(0.0, next_decision - self._clock())

    def on_renew_failure(self, exc: KubeApiError | None, now: float, timing: Timing) -> None:
        """After a failed renewal, and at every check until one succeeds: keep MASTER
        while the failsafe allows it, else raise LeaseLost."""
        first = self.outage_since is None
        if first:
            self.outage_since = now
        keep, left = outage_verdict(
            self.opts.apiserver_outage,
            now_mono=self._clock(),
            valid_until=self.valid_until,
            decision_latency_s=self.decision_latency(now, timing),
        )
        down_for = self._clock() - (self.outage_since or now)
        policy = self.opts.apiserver_outage.value
        if not keep:
            raise LeaseLost(
                f"cannot renew lease {self.lease_ref} ({exc}) for {down_for:.1f}s; "
                f"our term ends in {max(0.0, left):.1f}s: stepping down "
                f"(apiserver_outage={policy})"
            )
        message = (
            f"kubernetes: cannot renew lease {self.lease_ref} ({exc}); "
            f"apiserver_outage=failsafe keeps MASTER while our term lasts ({left:.1f}s left)"
        )
        if first:
            event(logging.WARNING, message, vip=self.vip.name, event="k8s_outage")
        else:
            self._warn.warn("outage", message, vip=self.vip.name, event="k8s_outage")

    async def release(self, api: KubeApi) -> bool:
        """Clear the holder if the lease is ours; True if we released it."""
        record = self.record if self.held else await self.read(api)
        self.held = False
        for _ in (1, 2):
            if record is None or record.holder != self.opts.identity:
                return False
            body = released(record, now_wall=self._wall()).to_object(
                self.opts.lease_name, self.namespace
            )
            try:
                written = await api.update_lease(self.opts.lease_name, body)
            except KubeApiError as exc:
                if exc.failure is not ApiFailure.CONFLICT:
                    raise
                record = await self.read(api)
                continue
            self.record = LeaseRecord.from_object(written)
            event(
                logging.INFO,
                f"kubernetes: released lease {self.lease_ref}",
                vip=self.vip.name,
                event="k8s_lease_released",
            )
            return True
        return False

    def transitions(self) -> int:
        return self.record.transitions if self.record is not None else 0
