"""What the kubernetes provider tells the cluster: Pod/Node labels and Events.

Both are informational: a label that cannot be written is retried from check() (or the
BACKUP retry loop), an Event is sent in the background and never delays a transition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from providers.kubernetes.api import ApiFailure, KubeApi, KubeApiError
from providers.kubernetes.holder import LeaseHolder
from providers.kubernetes.lease import format_time
from providers.kubernetes.options import Options
from sidecar.config import VipConfig
from sidecar.log import RateLimitedWarnings

COMPONENT = "vip-sidecar"


class Publisher:
    def __init__(
        self,
        opts: Options,
        vip: VipConfig,
        holder: LeaseHolder,
        *,
        wall: Callable[[], datetime],
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

    async def apply_labels(self, value: str) -> bool:
        """Merge-patch our label onto the Pod (and Node); True if all went through."""
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
        for what, patch in targets:
            try:
                await patch()
            except KubeApiError as exc:
                ok = False
                self._warn.warn(
                    f"label/{what}",
                    f"kubernetes: cannot label {what} {self.opts.label_key}={value}: {exc}",
                    vip=self.vip.name,
                    event="k8s_label_failed",
                )
        self.labels_pending = None if ok else value
        return ok and bool(targets)

    async def relabel_stale_holder(self, stale: tuple[str | None, str | None]) -> bool:
        """A holder that died without stepping down still says `master`: fix it.
        True once done (or nothing to do)."""
        if self.api is None:
            return False
        pod, node = stale
        labels: dict[str, str | None] = {self.opts.label_key: "backup"}
        try:
            if pod and self.opts.label_pod:
                try:
                    await self.api.patch_pod_labels(pod, labels)
                except KubeApiError as exc:
                    if exc.failure is not ApiFailure.NOT_FOUND:
                        raise
            if node and self.opts.label_node:
                try:
                    await self.api.patch_node_labels(node, labels)
                except KubeApiError as exc:
                    if exc.failure is not ApiFailure.NOT_FOUND:
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
        """Create an Event in the background: informational, so it never delays the
        transition it describes."""
        if not self.opts.events or self.api is None:
            return
        api = self.api
        now = self._wall()
        if self.opts.pod_name:
            involved: dict[str, Any] = {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": self.opts.pod_name,
                "namespace": self.holder.namespace,
            }
            if self.pod_uid:
                involved["uid"] = self.pod_uid
            base = self.opts.pod_name
        else:  # outside a Pod the Lease is the natural subject
            involved = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "name": self.opts.lease_name,
                "namespace": self.holder.namespace,
            }
            base = self.opts.lease_name
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{base}.{time.time_ns():x}",
                "namespace": self.holder.namespace,
            },
            "involvedObject": involved,
            "reason": reason,
            "message": message[:1024],
            "type": kind,
            "source": {"component": COMPONENT, "host": self.opts.node_name or ""},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.opts.identity,
            "firstTimestamp": format_time(now),
            "lastTimestamp": format_time(now),
            "count": 1,
        }

        async def send() -> None:
            try:
                await api.create_event(body)
            except KubeApiError as exc:
                self._warn.warn(
                    "event",
                    f"kubernetes: cannot create event {reason}: {exc}",
                    vip=self.vip.name,
                    event="k8s_event_failed",
                )

        task = asyncio.ensure_future(send())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
