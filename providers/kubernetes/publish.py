"""What the kubernetes provider tells the cluster: Pod/Node labels and Events.

Both are informational: a label that cannot be written is retried from check() (or the
BACKUP retry loop), an Event is sent in the background and never delays a transition.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vip_sidecar.config import VipConfig
from vip_sidecar.log import RateLimitedWarnings, event
from vip_sidecar.providers.kubernetes.api import ApiFailure, KubeApi, KubeApiError
from vip_sidecar.providers.kubernetes.holder import LeaseHolder
from vip_sidecar.providers.kubernetes.lease import format_time
from vip_sidecar.providers.kubernetes.options import Options

COMPONENT = "vip-sidecar"
#: 403 (RBAC, admission) and 400/422 (an invalid label): the same patch will never work
PERMANENT_LABEL_FAILURES = frozenset({ApiFailure.FORBIDDEN, ApiFailure.INVALID})


class Publisher:
    def __init__(
        self,
        opts: Options,
        vip: VipConfig,
        holder: LeaseHolder,
        *,
        wall: Callable[[], datetime],
        clock: Callable[[], float],
        warn: RateLimitedWarnings,
    ) -> None:
        self.opts = opts
        self.vip = vip
        self.holder = holder  # the lease names the namespace and is the Events' subject
        self.api: KubeApi | None = None  # set once the provider has connected
        self._wall = wall
        self._warn = warn
        self.labels_pending: str | None = None
        self.pod_uid: str | None = None
        self.background: set[asyncio.Task[Any]] = set()
        #: label targets the apiserver refused for good (403/400/422), with the reason
        self.labels_refused: dict[str, str] = {}
        self.recorder = EventRecorder(self, clock)
        self._event_lock = asyncio.Lock()

    async def apply_labels(self, value: str) -> bool:
        """Merge-patch our label onto the Pod (and Node); True if all went through.

        A transient failure leaves the value pending (check() or the BACKUP retry loop
        tries again). A permanent one (403 from RBAC or admission, 400/422: the
        apiserver will never take it) is reported once and that target is not tried
        again until the daemon restarts: retrying would only repeat the refusal."""
        api = self.api
        ok = True
        labels: dict[str, str | None] = {self.opts.label_key: value}
        targets: list[tuple[str, Callable[[], Awaitable[Any]]]] = []
        if api is not None and self.opts.label_pod and self.opts.pod_name:
            pod = self.opts.pod_name
            targets.append((f"pod {pod}", lambda: api.patch_pod_labels(pod, labels)))
        if api is not None and self.opts.label_node and self.opts.node_name:
            node = self.opts.node_name
            targets.append((f"node {node}", lambda: api.patch_node_labels(node, labels)))
        if api is None:
            ok = False
        pending = False
        for what, patch in targets:
            if what in self.labels_refused:
                ok = False
                continue
            try:
                await patch()
            except KubeApiError as exc:
                ok = False
                if exc.failure in PERMANENT_LABEL_FAILURES:
                    self.labels_refused[what] = str(exc)
                    event(
                        logging.ERROR,
                        f"kubernetes: cannot label {what} {self.opts.label_key}={value}: "
                        f"{exc}; not retried (fix RBAC, the admission policy or label_key, "
                        "then restart)",
                        vip=self.vip.name,
                        event="k8s_label_refused",
                    )
                    continue
                pending = True
                self._warn.warn(
                    f"label/{what}",
                    f"kubernetes: cannot label {what} {self.opts.label_key}={value}: {exc}",
                    vip=self.vip.name,
                    event="k8s_label_failed",
                )
        self.labels_pending = value if pending or api is None else None
        return ok and bool(targets)

    async def relabel_stale_holder(self, stale: tuple[str | None, str | None]) -> bool:
        """A holder that died without stepping down still says `master`: fix it.
        True once done (or nothing to do)."""
        if self.api is None:
            return False
        pod, node = stale
        labels: dict[str, str | None] = {self.opts.label_key: "backup"}
        api = self.api
        patches = (
            (pod if self.opts.label_pod else None, api.patch_pod_labels),
            (node if self.opts.label_node else None, api.patch_node_labels),
        )
        try:
            for name, patch in patches:
                if not name:
                    continue
                try:
                    await patch(name, labels)
                except KubeApiError as exc:
                    if exc.failure is not ApiFailure.NOT_FOUND:  # gone: nothing to fix
                        raise
        except KubeApiError as exc:
            self._warn.warn(
                "stale",
                f"kubernetes: cannot relabel the previous holder ({pod}, {node}): {exc}",
                vip=self.vip.name,
                event="k8s_label_failed",
            )
            return False
        return True

    def who(self) -> str:
        where = self.opts.node_name or self.opts.identity
        return f"VIP {self.vip.name} ({self.vip.addr_text}) on {where}"

    def emit(self, kind: str, reason: str, message: str) -> None:
        """Record an Event in the background: informational, so it never delays the
        transition it describes. Repeats are aggregated and rate-limited per reason
        (EventRecorder)."""
        if not self.opts.events or self.api is None:
            return
        api = self.api

        async def send() -> None:
            async with self._event_lock:  # a patch must follow the create it names
                await self.recorder.record(api, kind, reason, message[:1024])

        task = asyncio.ensure_future(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def involved_object(self) -> tuple[dict[str, Any], str]:
        """The Event's subject (our Pod, else the Lease) and the base of Event names."""
        if self.opts.pod_name:
            involved: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.opts.pod_name,
                "namespace": self.holder.namespace,
            }
            if self.pod_uid:
                involved["uid"] = self.pod_uid
            return involved, self.opts.pod_name
        # outside a Pod the Lease is the natural subject
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "name": self.opts.lease_name,
            "namespace": self.holder.namespace,
        }, self.opts.lease_name

    def event_body(self, kind: str, reason: str, message: str) -> dict[str, Any]:
        involved, base = self.involved_object()
        now = format_time(self._wall())
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{base}.{time.time_ns():x}",
                "namespace": self.holder.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": COMPONENT, "host": self.opts.node_name or ""},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.opts.identity,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }


#: client-go's EventCorrelator defaults: more than 10 distinct messages of one
#: (type, reason) within 10 minutes are combined into one Event; a token bucket of 25
#: Events refilled by one every 5 minutes (per reason here, per object in client-go)
AGGREGATE_AFTER = 10
AGGREGATE_WINDOW_S = 600.0
SPAM_BURST = 25
SPAM_REFILL_S = 300.0
COMBINED = "(combined from similar events): "


@dataclass
class _Sent:
    name: str
    count: int
    last: float  # monotonic


class EventRecorder:
    """client-go's event correlation, reduced to what one sidecar emits.

    * dedup: an Event identical to one sent within the window (type, reason, message)
      is not created again: the existing one gets count + 1 and a new lastTimestamp
      (a merge patch, as client-go's recorder does);
    * aggregation: after AGGREGATE_AFTER distinct messages of one (type, reason) in the
      window, further ones update one combined Event whose message is the latest;
    * spam filter: a token bucket per reason; Events beyond it are dropped and counted.
    """

    def __init__(self, publisher: Publisher, clock: Callable[[], float]) -> None:
        self.publisher = publisher
        self._clock = clock
        self._sent: dict[tuple[str, str, str], _Sent] = {}
        self._distinct: dict[tuple[str, str], list[float]] = {}
        self._tokens: dict[str, tuple[float, float]] = {}  # reason -> (tokens, at)
        self.dropped = 0

    def _allow(self, reason: str, now: float) -> bool:
        tokens, at = self._tokens.get(reason, (float(SPAM_BURST), now))
        tokens = min(float(SPAM_BURST), tokens + (now - at) / SPAM_REFILL_S)
        if tokens < 1.0:
            self._tokens[reason] = (tokens, now)
            return False
        self._tokens[reason] = (tokens - 1.0, now)
        return True

    def _key(self, kind: str, reason: str, message: str, now: float) -> tuple[str, str, str]:
        """The dedup key and message after aggregation."""
        if (kind, reason, message) in self._sent:
            return (kind, reason, message)
        recent = [t for t in self._distinct.get((kind, reason), []) if now - t < AGGREGATE_WINDOW_S]
        recent.append(now)
        self._distinct[(kind, reason)] = recent
        if len(recent) > AGGREGATE_AFTER:
            return (kind, reason, COMBINED)
        return (kind, reason, message)

    async def record(self, api: KubeApi, kind: str, reason: str, message: str) -> None:
        now = self._clock()
        key = self._key(kind, reason, message, now)
        text = message if key[2] != COMBINED else COMBINED + message
        if not self._allow(reason, now):
            self.dropped += 1
            self.publisher._warn.warn(
                f"event_spam/{reason}",
                f"kubernetes: Event {reason} dropped by the per-reason rate limit "
                f"({self.dropped} dropped so far)",
                vip=self.publisher.vip.name,
                event="k8s_event_dropped",
            )
            return
        try:
            seen = self._sent.get(key)
            if seen is not None and now - seen.last < AGGREGATE_WINDOW_S:
                changes: dict[str, Any] = {
                    "count": seen.count + 1,
                    "lastTimestamp": format_time(self.publisher._wall()),
                }
                if key[2] == COMBINED:
                    changes["message"] = text
                try:
                    await api.patch_event(seen.name, changes)
                except KubeApiError as exc:
                    if exc.failure is not ApiFailure.NOT_FOUND:  # expired (events TTL)
                        raise
                else:
                    seen.count += 1
                    seen.last = now
                    return
            body = self.publisher.event_body(kind, reason, text)
            await api.create_event(body)
            self._sent[key] = _Sent(body["metadata"]["name"], 1, now)
            for old, sent in list(self._sent.items()):
                if now - sent.last >= AGGREGATE_WINDOW_S:
                    del self._sent[old]
        except KubeApiError as exc:
            self.publisher._warn.warn(
                "event",
                f"kubernetes: cannot create event {reason}: {exc}",
                vip=self.publisher.vip.name,
                event="k8s_event_failed",
            )
