"""Kubernetes provider: a Lease as witness and fence, Pod/Node labels, Events.

The CARP election decides; the Lease confirms (design principle: "a node that cannot
confirm does not claim"). Per VIP there is one coordination.k8s.io/v1 Lease:

* pre_master (the veto hook) acquires it with resourceVersion optimistic concurrency.
  A lease validly held by another node, or a 409 Conflict lost to another writer,
  refuses the promotion: the node stays BACKUP and the runtime retries after its
  hold-down. This is the split-brain fence when CARP packets are lost between nodes.
  If the other holder's term ends within `acquire_wait` (a crashed master, or one
  that is handing over on SIGTERM) we wait for it instead of refusing at once, so a
  failover does not pay the runtime's veto backoff on top of the lease expiry.
* While MASTER, check() renews the lease every `renew_interval` (one conditional
  update, no read: the cached resourceVersion makes it safe). A renewal that finds
  another holder demotes at once. An apiserver that cannot be reached is handled by
  `apiserver_outage` (see docs/kubernetes.md):
    - failsafe (default): keep MASTER while the lease we last wrote is still ours,
      i.e. for up to lease_duration after the last successful renewal, then step
      down (Patroni's failsafe_mode is the reference; we cannot ask peers, see docs).
    - demote: step down at the first renewal that fails.
  Renewal attempts in an outage are spaced by renew_interval (and Retry-After).
  A promotion retries transient API errors (unreachable, 429 with Retry-After, 5xx,
  resets) while a request can still end inside its budget; a BACKUP whose apiserver
  stays unreachable for the whole budget refuses, in both modes.
* Another holder's lease is over only when this node has seen it unchanged for a whole
  lease duration (client-go's rule): nobody's wall clock is trusted (lease.py).
* down() releases the lease (holder cleared: the next node takes it at once and
  increments leaseTransitions) after the other providers have removed the VIP — list
  `kubernetes` before `alias` so that down runs it last.
* Labels `vip-sidecar.io/<vip>=master|backup` are merge-patched onto our Pod (and Node
  with `label_node: true`); other labels are never touched. A node that takes over an
  expired lease also relabels the previous holder (named in the Lease's annotations),
  so a master killed with -9 does not keep a stale `master` label.
  A label the apiserver refuses for good (403/422) is reported once, not retried.
* One core/v1 Event per transition on our Pod (reason, old -> new state, timings),
  deduplicated, aggregated and rate-limited per reason like client-go's recorder.

Every API call is declared in vip_sidecar.providers.kubernetes.api.API_CALLS, which the Helm
chart's RBAC must equal (a test compares them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.log import RateLimitedWarnings, event
from vip_sidecar.providers.base import Preflight, Provider, Veto, VipContext
from vip_sidecar.providers.kubernetes import preflight as k8s_preflight
from vip_sidecar.providers.kubernetes.api import KubeApi, KubeApiError
from vip_sidecar.providers.kubernetes.connect import SERVICE_ACCOUNT_DIR, connect
from vip_sidecar.providers.kubernetes.holder import LeaseHolder, LeaseLost, LeaseRefused
from vip_sidecar.providers.kubernetes.options import parse_options
from vip_sidecar.providers.kubernetes.publish import Publisher


class KubernetesProvider(Provider):
    name = "kubernetes"
    can_veto = True

    def __init__(
        self,
        spec: ProviderSpec,
        vip: VipConfig,
        config: Config,
        *,
        environ: Mapping[str, str] | None = None,
        api: KubeApi | None = None,
        clock: Callable[[], float] | None = None,
        wall: Callable[[], datetime] | None = None,
        sleep: Callable[[float], Awaitable[None]] | None = None,
        service_account_dir: str = SERVICE_ACCOUNT_DIR,
    ) -> None:
        super().__init__(spec, vip, config)
        self.environ: Mapping[str, str] = os.environ if environ is None else environ
        self.opts, self.timeout = parse_options(spec, vip, self.environ)
        # check() is cheap between renewals; ticking faster than the renewal period
        # lets the failsafe decide close to the real end of the lease
        self.tick_s = self.opts.tick_s
        self.reassert_interval = self.tick_s
        self.api = api
        self.source = "injected" if api is not None else "not connected"
        self._clock = clock or time.monotonic
        self.wall = wall or (lambda: datetime.now(UTC))
        self._sleep = sleep or asyncio.sleep
        self._sa_dir = Path(service_account_dir)
        self._warn = RateLimitedWarnings()
        self.holder = LeaseHolder(
            self.opts, vip, clock=self._clock, wall=self.wall, sleep=self._sleep, warn=self._warn
        )
        self.publisher = Publisher(
            self.opts, vip, self.holder, wall=self.wall, clock=self._clock, warn=self._warn
        )
        self.publisher.api = api
        self._role: str | None = None
        self._master_since: float | None = None
        self._promotion: dict[str, Any] = {}
        self._retry: asyncio.Task[None] | None = None

    # -- identity and the API client -------------------------------------------------
    @property
    def lease_ref(self) -> str:
        return self.holder.lease_ref

    @property
    def namespace(self) -> str:
        return self.holder.namespace

    async def ensure_api(self) -> KubeApi:
        if self.api is None:
            api, self.source = await asyncio.to_thread(
                connect, self.opts, self.environ, self._sa_dir
            )
            self.api = self.publisher.api = api
            self.holder.namespace = api.namespace
            event(
                logging.INFO,
                f"kubernetes: using {self.source} ({api.api_client.configuration.host}), "
                f"lease {self.lease_ref}, identity {self.opts.identity}",
                vip=self.vip.name,
                event="k8s_connected",
            )
        return self.api

    def order_warning(self) -> str | None:
        """Providers listed before us run their down() after ours: the lease would be
        released while they still hold the VIP."""
        labels = [p.label for p in self.vip.providers]
        if self.spec.label not in labels:
            return None
        before = labels[: labels.index(self.spec.label)]
        if not before:
            return None
        return (
            f"kubernetes: listed after {', '.join(before)}; on the way down the lease is "
            f"released before {', '.join(before)} removed the VIP, so a peer may claim it "
            "early: list kubernetes first"
        )

    async def preflight(self) -> Preflight:
        return await k8s_preflight.preflight(self)

    # -- provider hooks --------------------------------------------------------------
    async def init(self) -> None:
        warning = self.order_warning()
        if warning:
            event(logging.WARNING, warning, vip=self.vip.name, event="config_warning")
        api = await self.ensure_api()
        if self.opts.pod_name:
            pod = await api.get_pod(self.opts.pod_name)
            self.publisher.pod_uid = (pod.get("metadata") or {}).get("uid")
        if self.opts.label_node and self.opts.node_name:
            await api.get_node(self.opts.node_name)

    async def pre_master(self, ctx: VipContext) -> None:
        self._cancel_retry()
        started = self._clock()
        try:
            api = await self.ensure_api()
            async with self.holder.lock:
                waited = await self.holder.acquire(
                    api,
                    self.opts.acquire_wait,
                    self.opts.acquire_budget - (self._clock() - started),
                )
        except LeaseRefused as exc:
            reason = str(exc)
            self.publisher.emit(
                "Warning", "PromotionRefused", f"{self.publisher.who()}: {reason}; staying BACKUP"
            )
            raise Veto(reason) from None
        except KubeApiError as exc:
            if exc.unavailable:
                reason = (
                    f"apiserver unreachable ({exc}) for {self._clock() - started:.1f}s of "
                    f"the {self.opts.acquire_budget:g}s promotion budget: cannot confirm "
                    f"lease {self.lease_ref}, and a node that cannot confirm does not claim"
                )
            else:
                reason = f"lease {self.lease_ref}: {exc}"
                self.publisher.emit(
                    "Warning", "PromotionRefused", f"{self.publisher.who()}: {reason}"
                )
            raise Veto(reason) from None
        except Exception as exc:  # bad kubeconfig, missing service account...
            raise Veto(f"kubernetes client not available: {type(exc).__name__}: {exc}") from None
        self._promotion = {
            "started": started,
            "lease_s": self._clock() - started,
            "waited_s": waited,
            "reason": ctx.reason,
        }

    async def up(self, ctx: VipContext) -> None:
        self._cancel_retry()
        api = await self.ensure_api()
        async with self.holder.lock:
            if not self.holder.held or self._clock() >= self.holder.valid_until:
                try:
                    await self.holder.acquire(api, 0.0)
                except LeaseRefused as exc:  # pipeline.up() failing demotes the node
                    raise LeaseLost(str(exc)) from None
        old = self._role or "BACKUP"
        self._role = "master"
        self._master_since = self._clock()
        await self.publisher.apply_labels("master")
        await self._relabel_stale_holder()
        p = self._promotion
        waited = p.get("waited_s", 0.0)
        wait_note = f", waited {waited:.2f}s for the previous holder" if waited > 0.05 else ""
        total = self._clock() - p["started"] if "started" in p else 0.0
        why = ctx.reason or p.get("reason") or "?"
        self.publisher.emit(
            "Normal",
            "BecameMaster",
            f"{self.publisher.who()}: {old.upper()} -> MASTER ({why}); "
            f"lease {self.lease_ref} acquired in {p.get('lease_s', 0.0) * 1000:.0f} ms"
            f"{wait_note}; leaseTransitions={self.holder.transitions()}; "
            f"{total * 1000:.0f} ms from promotion request to labels",
        )
        self._promotion = {}

    async def down(self, ctx: VipContext) -> None:
        self._cancel_retry()
        old = self._role
        master_for = (
            self._clock() - self._master_since
            if old == "master" and self._master_since is not None
            else None
        )
        self._role = "backup"
        self._master_since = None
        started = self._clock()
        try:
            api = await self.ensure_api()
            async with self.holder.lock:
                released_lease = await self.holder.release(api)
        except Exception as exc:
            self._warn.warn(
                "release",
                f"kubernetes: could not release lease {self.lease_ref} ({exc}); "
                "it expires by itself, retrying in the background",
                vip=self.vip.name,
                event="k8s_release_failed",
            )
            self._start_retry()
            return
        await self.publisher.apply_labels("backup")
        if self.publisher.labels_pending is not None:  # transient: retry in the background
            self._start_retry()
        who = self.publisher.who()
        if old == "master":
            note = "lease released" if released_lease else "lease was no longer ours"
            message = (
                f"{who}: MASTER -> BACKUP after {master_for or 0.0:.1f}s as master; "
                f"{note} in {(self._clock() - started) * 1000:.0f} ms"
            )
        else:
            message = f"{who}: {'INIT' if old is None else 'BACKUP'} -> BACKUP"
        self.publisher.emit("Normal", "BecameBackup", message)

    async def bow_out(self, ctx: VipContext) -> None:
        """Graceful exit: release the lease right after the bow-out advert so the
        successor's pre_master can take it at once; labels and the Event follow in down()."""
        if not self.holder.held:
            return
        try:
            api = await self.ensure_api()
            async with self.holder.lock:
                await self.holder.release(api)
        except Exception as exc:  # down() retries; the lease also expires by itself
            self._warn.warn(
                "bow_out",
                f"kubernetes: could not release lease {self.lease_ref} at bow-out ({exc})",
                vip=self.vip.name,
                event="k8s_release_failed",
            )

    async def check(self, ctx: VipContext) -> bool:
        api = await self.ensure_api()
        now = self._clock()
        # the runtime calls us on its 1 s housekeeping grid: allow half a tick early, or a
        # 2 s period would quietly become 3 s. In an outage the same spacing holds (one
        # attempt per renew_interval, later if the apiserver sent Retry-After); the
        # ticks in between only ask the failsafe whether our term still covers us.
        due = max(
            self.holder.last_renew + self.opts.renew_interval - self.tick_s / 2,
            self.holder.not_before,
        )
        if now < due:
            if self.holder.outage_since is not None:
                self._keep_or_step_down(self.holder.last_error, now, ctx)
        else:
            self.holder.last_renew = now
            try:
                async with self.holder.lock:
                    await self.holder.renew(api, now)
            except LeaseLost as exc:
                self._lost(exc)
                raise
            except KubeApiError as exc:
                self.holder.last_error = exc
                if exc.retry_after is not None:
                    self.holder.not_before = now + exc.retry_after
                self._keep_or_step_down(exc, now, ctx)
                return False
            if self.holder.outage_since is not None:
                event(
                    logging.WARNING,
                    f"kubernetes: lease {self.lease_ref} renewed again after "
                    f"{self._clock() - self.holder.outage_since:.1f}s of apiserver trouble",
                    vip=self.vip.name,
                    event="k8s_outage_over",
                )
                self.holder.outage_since = None
                self.holder.last_error = None
        repaired = False
        if self.publisher.labels_pending is not None:
            repaired = await self.publisher.apply_labels(self.publisher.labels_pending)
        await self._relabel_stale_holder()
        return repaired

    def _lost(self, exc: Exception) -> None:
        self.holder.held = False
        self.publisher.emit("Warning", "LeaseLost", f"{self.publisher.who()}: {exc}; stepping down")

    def _keep_or_step_down(self, exc: KubeApiError | None, now: float, ctx: VipContext) -> None:
        try:
            self.holder.on_renew_failure(exc, now, ctx.timing)
        except LeaseLost as lost:
            self._lost(lost)
            raise

    def status(self) -> dict[str, Any]:
        """For /status; the numbers also become vip_sidecar_provider_value metrics."""
        return {
            "lease": self.lease_ref,
            "lease_held": self.holder.held,
            "lease_transitions": self.holder.transitions(),
            "acquire_retries": self.holder.retries,
            "events_dropped": self.publisher.recorder.dropped,
            "labels_refused": len(self.publisher.labels_refused),
        }

    async def close(self) -> None:
        self._cancel_retry()
        if self.publisher.background:
            await asyncio.wait(
                set(self.publisher.background), timeout=self.opts.request_timeout + 1
            )
        for task in list(self.publisher.background):
            task.cancel()
        if self.api is not None:
            await self.api.close()

    async def _relabel_stale_holder(self) -> None:
        stale = self.holder.stale_holder
        if stale is not None and await self.publisher.relabel_stale_holder(stale):
            self.holder.stale_holder = None

    def _start_retry(self) -> None:
        if self._retry is None or self._retry.done():
            self._retry = asyncio.ensure_future(self._retry_backup_work())

    def _cancel_retry(self) -> None:
        if self._retry is not None and not self._retry.done():
            self._retry.cancel()
        self._retry = None

    async def _retry_backup_work(self) -> None:
        """As BACKUP after a failed down(): release the lease and set the label once the
        apiserver answers again (no check() runs for a BACKUP)."""
        while True:
            await self._sleep(self.opts.renew_interval)
            try:
                api = await self.ensure_api()
                async with self.holder.lock:
                    await self.holder.release(api)
            except Exception:
                continue
            await self.publisher.apply_labels("backup")
            if self.publisher.labels_pending is None:  # written, or refused for good
                event(
                    logging.INFO,
                    "kubernetes: apiserver reachable again; BACKUP state recorded",
                    vip=self.vip.name,
                    event="k8s_backup_recorded",
                )
                return


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> KubernetesProvider:
    return KubernetesProvider(spec, vip, config)
