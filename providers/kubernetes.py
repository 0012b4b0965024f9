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
  A BACKUP asked to promote while the apiserver is unreachable refuses in both modes.
* down() releases the lease (holder cleared: the next node takes it at once and
  increments leaseTransitions) after the other providers have removed the VIP — list
  `kubernetes` before `alias` so that down runs it last.
* Labels `vip-sidecar.io/<vip>=master|backup` are merge-patched onto our Pod (and Node
  with `label_node: true`); other labels are never touched. A node that takes over an
  expired lease also relabels the previous holder (named in the Lease's annotations),
  so a master killed with -9 does not keep a stale `master` label.
* One core/v1 Event per transition on our Pod (reason, old -> new state, timings).

Every API call is declared in providers.k8s_api.API_CALLS, which the Helm chart's RBAC
must equal (a test compares them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from providers.base import Provider, ProviderConfigError, Veto, VipContext
from providers.k8s_api import (
    API_CALLS,
    NAMESPACED_CALLS,
    NODE_CALLS,
    ApiCall,
    Failure,
    KubeApi,
    KubeApiError,
    rbac_triples,
)
from providers.k8s_lease import (
    ANNOTATION_NODE,
    ANNOTATION_POD,
    ANNOTATION_VIP,
    LeaseRecord,
    Observer,
    OutagePolicy,
    Standing,
    acquired,
    dns_name,
    format_time,
    judge,
    label_name,
    outage_verdict,
    released,
)
from sidecar import parsing
from sidecar.config import Config, ProviderSpec, VipConfig
from sidecar.log import RateLimitedWarnings, event

__all__ = ["API_CALLS", "NAMESPACED_CALLS", "NODE_CALLS", "KubernetesProvider", "create"]

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
LABEL_PREFIX = "vip-sidecar.io/"
#: the runtime's housekeeping tick: check() runs at most this late (sidecar.runtime)
HOUSEKEEPING_S = 1.0
CHECK_TICK_S = 1.0
POLL_S = 0.5
COMPONENT = "vip-sidecar"


class LeaseRefused(Exception):
    """Another node holds the lease (or won the race for it)."""


class LeaseLost(Exception):
    """While MASTER, the lease turned out to belong to someone else."""


@dataclass(frozen=True)
class Options:
    lease_name: str
    namespace: str | None
    kubeconfig: str | None
    context: str | None
    identity: str
    pod_name: str | None
    node_name: str | None
    lease_duration: int
    renew_interval: float
    request_timeout: float
    max_clock_skew: float
    acquire_wait: float
    apiserver_outage: OutagePolicy
    label_pod: bool
    label_node: bool
    label_key: str
    events: bool

    @property
    def calls(self) -> frozenset[ApiCall]:
        """The API calls this configuration makes (RBAC it needs)."""
        return NAMESPACED_CALLS | (NODE_CALLS if self.label_node else frozenset())


def _maybe_text(value: Any) -> str | None:
    return None if value is None or str(value) == "" else str(value)


def parse_options(
    spec: ProviderSpec, vip: VipConfig, environ: Mapping[str, str]
) -> tuple[Options, float]:
    """Validate the provider's options; returns them and the pipeline timeout to use."""
    bag = parsing.OptionBag("kubernetes", spec.options, ProviderConfigError)

    def num(key: str, default: float, lo: float, hi: float) -> float:
        return bag.take(key, parsing.number(lo, hi), default)

    def txt(key: str, default: str | None) -> str | None:
        return _maybe_text(bag.take(key, _maybe_text, default))

    duration = num("lease_duration", 10, 1, 3600)
    if duration != int(duration):
        raise ProviderConfigError(
            f"kubernetes.lease_duration: leaseDurationSeconds is whole seconds, got {duration}"
        )
    renew = num("renew_interval", min(2.0, duration / 3), 0.1, 3600)
    if renew > duration / 2:
        raise ProviderConfigError(
            f"kubernetes.renew_interval: must be at most half of lease_duration "
            f"({duration / 2:g}) so one failed renewal does not cost the lease, got {renew:g}"
        )
    request_timeout = num("request_timeout", max(0.5, min(5.0, renew)), 0.1, 60)
    skew = num("max_clock_skew", 1.0, 0, 3600)
    # pre_master must finish inside the pipeline's timeout: a GET and a write after waiting
    budget = spec.timeout - 2 * request_timeout - 1.0
    if budget < 0:
        raise ProviderConfigError(
            f"kubernetes: the provider timeout ({spec.timeout:g}s) must exceed two API "
            f"calls plus 1s ({2 * request_timeout + 1:g}s); raise `timeout` or lower "
            "request_timeout"
        )
    wait = num("acquire_wait", min(duration + skew + POLL_S, budget), 0, 3600)
    if wait > budget:
        raise ProviderConfigError(
            f"kubernetes.acquire_wait: must leave room for two API calls inside the "
            f"provider timeout ({spec.timeout:g}s), so at most {budget:g}s, got {wait:g}"
        )
    policy = OutagePolicy(
        bag.take(
            "apiserver_outage", parsing.choice(tuple(p.value for p in OutagePolicy)), "failsafe"
        )
    )
    pod_name = txt("pod_name", environ.get("POD_NAME"))
    node_name = txt("node_name", environ.get("NODE_NAME"))
    identity = txt("identity", pod_name or node_name or socket.gethostname())
    assert identity is not None
    namespace = txt("namespace", None)
    pod_namespace = environ.get("POD_NAMESPACE") or None
    if namespace and pod_namespace and namespace != pod_namespace:
        raise ProviderConfigError(
            f"kubernetes.namespace: {namespace!r} differs from POD_NAMESPACE "
            f"{pod_namespace!r}; the Lease, the Pod and its Events live in one namespace "
            "(the chart's Role is namespaced)"
        )
    label_pod = bag.take("label_pod", parsing.boolean, True)
    label_node = bag.take("label_node", parsing.boolean, False)
    if label_node and not node_name:
        raise ProviderConfigError(
            "kubernetes.label_node: needs the node name (NODE_NAME from the downward API "
            "or the node_name option)"
        )
    label_key = txt("label_key", LABEL_PREFIX + label_name(vip.name))
    assert label_key is not None
    lease_name = txt("lease_name", dns_name(vip.name, "vip-sidecar-"))
    assert lease_name is not None
    if dns_name(lease_name) != lease_name:
        raise ProviderConfigError(
            f"kubernetes.lease_name: must be a DNS-1123 name (lowercase letters, digits, "
            f"'-'), got {lease_name!r}"
        )
    options = Options(
        lease_name=lease_name,
        namespace=namespace or pod_namespace,
        kubeconfig=txt("kubeconfig", environ.get("KUBECONFIG")),
        context=txt("context", None),
        identity=identity,
        pod_name=pod_name,
        node_name=node_name,
        lease_duration=int(duration),
        renew_interval=renew,
        request_timeout=request_timeout,
        max_clock_skew=skew,
        acquire_wait=wait,
        apiserver_outage=policy,
        label_pod=label_pod and pod_name is not None,
        label_node=label_node,
        label_key=label_key,
        events=bag.take("events", parsing.boolean, True),
    )
    bag.finish()
    return options, spec.timeout


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
        self.tick_s = min(self.opts.renew_interval, CHECK_TICK_S)
        self.reassert_interval = self.tick_s
        self.api = api
        self.namespace = self.opts.namespace or "default"
        self.source = "injected" if api is not None else "not connected"
        self._clock = clock or time.monotonic
        self._wall = wall or (lambda: datetime.now(UTC))
        self._sleep = sleep or asyncio.sleep
        self._sa_dir = Path(service_account_dir)
        self._observer = Observer()
        self._record: LeaseRecord | None = None
        self._held = False
        self._valid_until = 0.0
        self._last_renew = float("-inf")
        self._outage_since: float | None = None
        self._labels_pending: str | None = None
        self._stale_holder: tuple[str | None, str | None] | None = None
        self._role: str | None = None
        self._master_since: float | None = None
        self._promotion: dict[str, Any] = {}
        self._pod_uid: str | None = None
        self._lock = asyncio.Lock()
        self._retry: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._warn = RateLimitedWarnings()

    # -- identity and the API client -------------------------------------------------
    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.opts.lease_name}"

    def _connect(self) -> KubeApi:
        """Build a client from kubeconfig or the in-cluster service account (blocking)."""
        from kubernetes import client
        from kubernetes import config as kube_config
        from kubernetes.config import incluster_config

        # the client ships without annotations for its config loaders
        kconfig: Any = kube_config
        in_cluster_loader: Any = incluster_config.InClusterConfigLoader
        cfg = client.Configuration()
        namespace = self.opts.namespace
        if self.opts.kubeconfig or "KUBERNETES_SERVICE_HOST" not in self.environ:
            path = os.path.expanduser(self.opts.kubeconfig or "~/.kube/config")
            kconfig.load_kube_config(
                config_file=path,
                context=self.opts.context,
                client_configuration=cfg,
                persist_config=False,
            )
            if namespace is None:
                _, active = kconfig.list_kube_config_contexts(path)
                if self.opts.context:
                    contexts, _ = kconfig.list_kube_config_contexts(path)
                    active = next(c for c in contexts if c["name"] == self.opts.context)
                namespace = (active or {}).get("context", {}).get("namespace")
            self.source = f"kubeconfig {path}"
        else:
            in_cluster_loader(
                token_filename=str(self._sa_dir / "token"),
                cert_filename=str(self._sa_dir / "ca.crt"),
                environ=self.environ,
            ).load_and_set(cfg)
            ns_file = self._sa_dir / "namespace"
            if namespace is None and ns_file.exists():
                namespace = ns_file.read_text().strip() or None
            self.source = "in-cluster service account"
        # urllib3's default retries would turn one request timeout into four; the
        # provider decides itself when to try again
        cfg.retries = False
        self.namespace = namespace or "default"
        return KubeApi(client.ApiClient(cfg), self.namespace, self.opts.request_timeout)

    async def _ensure_api(self) -> KubeApi:
        if self.api is None:
            self.api = await asyncio.to_thread(self._connect)
            event(
                logging.INFO,
                f"kubernetes: using {self.source} ({self.api.api_client.configuration.host}), "
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

    # -- provider hooks --------------------------------------------------------------
    async def init(self) -> None:
        warning = self.order_warning()
        if warning:
            event(logging.WARNING, warning, vip=self.vip.name, event="config_warning")
        api = await self._ensure_api()
        if self.opts.pod_name:
            pod = await api.get_pod(self.opts.pod_name)
            self._pod_uid = (pod.get("metadata") or {}).get("uid")
        if self.opts.label_node and self.opts.node_name:
            await api.get_node(self.opts.node_name)

    async def pre_master(self, ctx: VipContext) -> None:
        self._cancel_retry()
        started = self._clock()
        try:
            api = await self._ensure_api()
            async with self._lock:
                waited = await self._acquire(api, self.opts.acquire_wait)
        except LeaseRefused as exc:
            reason = str(exc)
            self._emit("Warning", "PromotionRefused", f"{self._who()}: {reason}; staying BACKUP")
            raise Veto(reason) from None
        except KubeApiError as exc:
            if exc.unavailable:
                reason = (
                    f"apiserver unreachable ({exc}): cannot confirm lease {self.lease_ref}, "
                    "and a node that cannot confirm does not claim"
                )
            else:
                reason = f"lease {self.lease_ref}: {exc}"
                self._emit("Warning", "PromotionRefused", f"{self._who()}: {reason}")
            raise Veto(reason) from None
        except Exception as exc:  # bad kubeconfig, missing service account...
            raise Veto(f"kubernetes client not available: {type(exc).__name__}: {exc}") from None
        self._promotion = {
            "started": started,
            "lease_s": self._clock() - started,
            "waited_s": waited,
            "reason": ctx.reason,
        }
        self._publish(ctx)

    async def up(self, ctx: VipContext) -> None:
        self._cancel_retry()
        api = await self._ensure_api()
        async with self._lock:
            if not self._held or self._clock() >= self._valid_until:
                try:
                    await self._acquire(api, 0.0)
                except LeaseRefused as exc:  # pipeline.up() failing demotes the node
                    raise LeaseLost(str(exc)) from None
        self._publish(ctx)
        old = self._role or "BACKUP"
        self._role = "master"
        self._master_since = self._clock()
        await self._apply_labels("master")
        await self._relabel_stale_holder()
        p = self._promotion
        waited = p.get("waited_s", 0.0)
        wait_note = f", waited {waited:.2f}s for the previous holder" if waited > 0.05 else ""
        total = self._clock() - p["started"] if "started" in p else 0.0
        self._emit(
            "Normal",
            "BecameMaster",
            f"{self._who()}: {old.upper()} -> MASTER ({ctx.reason or p.get('reason') or '?'}); "
            f"lease {self.lease_ref} acquired in {p.get('lease_s', 0.0) * 1000:.0f} ms"
            f"{wait_note}; leaseTransitions={self._transitions()}; "
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
            api = await self._ensure_api()
            async with self._lock:
                released_lease = await self._release(api)
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
        labelled = await self._apply_labels("backup")
        if not labelled:
            self._start_retry()
        if old == "master":
            note = "lease released" if released_lease else "lease was no longer ours"
            message = (
                f"{self._who()}: MASTER -> BACKUP after {master_for or 0.0:.1f}s as master; "
                f"{note} in {(self._clock() - started) * 1000:.0f} ms"
            )
        else:
            message = f"{self._who()}: {'INIT' if old is None else 'BACKUP'} -> BACKUP"
        self._emit("Normal", "BecameBackup", message)

    async def bow_out(self, ctx: VipContext) -> None:
        """Graceful exit: release the lease right after the bow-out advert so the
        successor's pre_master can take it at once; labels and the Event follow in down()."""
        if not self._held:
            return
        try:
            api = await self._ensure_api()
            async with self._lock:
                await self._release(api)
        except Exception as exc:  # down() retries; the lease also expires by itself
            self._warn.warn(
                "bow_out",
                f"kubernetes: could not release lease {self.lease_ref} at bow-out ({exc})",
                vip=self.vip.name,
                event="k8s_release_failed",
            )

    async def check(self, ctx: VipContext) -> bool:
        api = await self._ensure_api()
        now = self._clock()
        # the runtime calls us on its 1 s housekeeping grid: allow half a tick early, or a
        # 2 s period would quietly become 3 s
        due = self._last_renew + self.opts.renew_interval - self.tick_s / 2
        if now >= due or self._outage_since:
            self._last_renew = now
            try:
                async with self._lock:
                    await self._renew(api, now)
            except LeaseLost as exc:
                self._held = False
                self._emit("Warning", "LeaseLost", f"{self._who()}: {exc}; stepping down")
                raise
            except KubeApiError as exc:
                self._on_renew_failure(exc, now)
                return False
            if self._outage_since is not None:
                event(
                    logging.WARNING,
                    f"kubernetes: lease {self.lease_ref} renewed again after "
                    f"{self._clock() - self._outage_since:.1f}s of apiserver trouble",
                    vip=self.vip.name,
                    event="k8s_outage_over",
                )
                self._outage_since = None
        repaired = False
        if self._labels_pending is not None:
            repaired = await self._apply_labels(self._labels_pending)
        if self._stale_holder is not None:
            await self._relabel_stale_holder()
        return repaired

    async def close(self) -> None:
        self._cancel_retry()
        if self._background:
            await asyncio.wait(set(self._background), timeout=self.opts.request_timeout + 1)
        for task in list(self._background):
            task.cancel()
        if self.api is not None:
            await self.api.close()

    # -- the lease ---------------------------------------------------------------------
    def _annotations(self) -> dict[str, str]:
        notes = {ANNOTATION_VIP: f"{self.vip.name} {self.vip.addr_text} vhid {self.vip.vhid}"}
        if self.opts.pod_name:
            notes[ANNOTATION_POD] = self.opts.pod_name
        if self.opts.node_name:
            notes[ANNOTATION_NODE] = self.opts.node_name
        return notes

    def _claim_body(self, record: LeaseRecord | None) -> dict[str, Any]:
        """The Lease object that makes us the holder (acquire, renew and its dry run)."""
        return acquired(
            record,
            self.opts.identity,
            now_wall=self._wall(),
            duration_s=self.opts.lease_duration,
            annotations=self._annotations(),
        ).to_object(self.opts.lease_name, self.namespace)

    async def _read(self, api: KubeApi) -> LeaseRecord | None:
        obj = await api.get_lease(self.opts.lease_name)
        return LeaseRecord.from_object(obj) if obj is not None else None

    async def _acquire(self, api: KubeApi, wait_s: float) -> float:
        """Take the lease, waiting up to wait_s for another holder's term to end.
        Returns the seconds spent waiting; raises LeaseRefused or KubeApiError."""
        started = self._clock()
        deadline = started + wait_s
        seen: tuple[str, str | None] | None = None  # (holder, resourceVersion) when we began
        lost_race = False
        while True:
            record = await self._read(api)
            now = self._clock()
            verdict = judge(
                record,
                self.opts.identity,
                now_wall=self._wall(),
                now_mono=now,
                observed_since=self._observer.see(record, now),
                max_clock_skew_s=self.opts.max_clock_skew,
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
            body = self._claim_body(record)
            write_started = self._clock()
            try:
                if record is None:
                    written = await api.create_lease(body)
                else:
                    written = await api.update_lease(self.opts.lease_name, body)
            except KubeApiError as exc:
                if exc.failure is not Failure.CONFLICT or lost_race:
                    if exc.failure is Failure.CONFLICT:
                        raise LeaseRefused(
                            f"409 Conflict on lease {self.lease_ref} twice: another node "
                            "keeps writing it"
                        ) from None
                    raise
                lost_race = True  # read again: who won decides
                continue
            self._took(written, write_started, record)
            return write_started - started

    def _took(
        self, written: Mapping[str, Any], write_started: float, previous: LeaseRecord | None
    ) -> None:
        self._record = LeaseRecord.from_object(written)
        self._held = True
        # our tenure counts from *before* the write: never longer than the term a peer
        # computes from the renewTime we stamped, whatever the clocks say
        self._valid_until = write_started + self.opts.lease_duration
        self._last_renew = write_started
        self._outage_since = None
        if previous is not None and previous.holder and previous.holder != self.opts.identity:
            pod = previous.annotations.get(ANNOTATION_POD)
            node = previous.annotations.get(ANNOTATION_NODE)
            self._stale_holder = (
                pod if pod != self.opts.pod_name else None,
                node if node != self.opts.node_name else None,
            )
            event(
                logging.WARNING,
                f"kubernetes: took over lease {self.lease_ref} from {previous.holder} "
                f"(its term had run out); leaseTransitions={self._record.transitions}",
                vip=self.vip.name,
                event="k8s_lease_takeover",
                previous=previous.holder,
                transitions=self._record.transitions,
            )
        else:
            event(
                logging.INFO,
                f"kubernetes: holding lease {self.lease_ref} "
                f"(leaseTransitions={self._record.transitions})",
                vip=self.vip.name,
                event="k8s_lease_acquired",
                transitions=self._record.transitions,
            )

    async def _renew(self, api: KubeApi, started: float) -> None:
        record = self._record
        if not self._held or record is None:
            raise LeaseLost(f"lease {self.lease_ref} is not held by us")
        for attempt in (1, 2):
            body = self._claim_body(record)
            try:
                written = await api.update_lease(self.opts.lease_name, body)
                break
            except KubeApiError as exc:
                if exc.failure is Failure.NOT_FOUND:
                    # deleted under us: our term is still running, so re-create it;
                    # if someone else created it first, create() says 409 and we lose
                    body["metadata"].pop("resourceVersion", None)
                    try:
                        written = await api.create_lease(body)
                    except KubeApiError as again:
                        if again.failure is Failure.CONFLICT:
                            raise LeaseLost(
                                f"lease {self.lease_ref} was deleted and re-created by another node"
                            ) from None
                        raise
                    break
                if exc.failure is not Failure.CONFLICT:
                    raise
                current = await self._read(api)
                if current is None or current.holder != self.opts.identity:
                    holder = current.holder if current is not None else None
                    raise LeaseLost(
                        f"lease {self.lease_ref} is now held by {holder or 'nobody'}"
                    ) from None
                if attempt == 2:
                    raise LeaseLost(f"409 Conflict renewing lease {self.lease_ref} twice") from None
                record = current  # someone edited it (annotations?): still ours, retry
        self._record = LeaseRecord.from_object(written)
        self._valid_until = started + self.opts.lease_duration

    def _decision_latency(self, check_started: float) -> float:
        """How long from now until the next check() can decide: the runtime schedules
        it one tick (plus 10 % jitter) after this one *started*, on its 1 s housekeeping
        grid, and it may spend a full request timeout before deciding."""
        next_decision = (
            check_started + 1.1 * self.tick_s + HOUSEKEEPING_S + self.opts.request_timeout
        )
        return max(0.0, next_decision - self._clock())

    def _on_renew_failure(self, exc: KubeApiError, now: float) -> None:
        first = self._outage_since is None
        if first:
            self._outage_since = now
        keep, left = outage_verdict(
            self.opts.apiserver_outage,
            now_mono=self._clock(),
            valid_until=self._valid_until,
            decision_latency_s=self._decision_latency(now),
        )
        down_for = self._clock() - (self._outage_since or now)
        policy = self.opts.apiserver_outage.value
        if not keep:
            raise RuntimeError(
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

    async def _release(self, api: KubeApi) -> bool:
        """Clear the holder if the lease is ours; True if we released it."""
        record = self._record if self._held else await self._read(api)
        self._held = False
        for _ in (1, 2):
            if record is None or record.holder != self.opts.identity:
                return False
            body = released(record, now_wall=self._wall()).to_object(
                self.opts.lease_name, self.namespace
            )
            try:
                written = await api.update_lease(self.opts.lease_name, body)
            except KubeApiError as exc:
                if exc.failure is not Failure.CONFLICT:
                    raise
                record = await self._read(api)
                continue
            self._record = LeaseRecord.from_object(written)
            event(
                logging.INFO,
                f"kubernetes: released lease {self.lease_ref}",
                vip=self.vip.name,
                event="k8s_lease_released",
            )
            return True
        return False

    def _transitions(self) -> int:
        return self._record.transitions if self._record is not None else 0

    def _publish(self, ctx: VipContext) -> None:
        # other providers may stamp cloud resources with this fencing epoch
        ctx.extra["kubernetes.lease"] = self.lease_ref
        ctx.extra["kubernetes.lease_transitions"] = self._transitions()

    # -- labels, events, background retries -------------------------------------------
    async def _apply_labels(self, value: str) -> bool:
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
        self._labels_pending = None if ok else value
        return ok and bool(targets)

    async def _relabel_stale_holder(self) -> None:
        """A holder that died without stepping down still says `master`: fix it."""
        if self._stale_holder is None or self.api is None:
            return
        pod, node = self._stale_holder
        labels: dict[str, str | None] = {self.opts.label_key: "backup"}
        try:
            if pod and self.opts.label_pod:
                try:
                    await self.api.patch_pod_labels(pod, labels)
                except KubeApiError as exc:
                    if exc.failure is not Failure.NOT_FOUND:
                        raise
            if node and self.opts.label_node:
                try:
                    await self.api.patch_node_labels(node, labels)
                except KubeApiError as exc:
                    if exc.failure is not Failure.NOT_FOUND:
                        raise
        except KubeApiError as exc:
            self._warn.warn(
                "stale",
                f"kubernetes: cannot relabel the previous holder ({pod}, {node}): {exc}",
                vip=self.vip.name,
                event="k8s_label_failed",
            )
            return
        self._stale_holder = None

    def _who(self) -> str:
        where = self.opts.node_name or self.opts.identity
        return f"VIP {self.vip.name} ({self.vip.addr_text}) on {where}"

    def _emit(self, kind: str, reason: str, message: str) -> None:
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
                "namespace": self.namespace,
            }
            if self._pod_uid:
                involved["uid"] = self._pod_uid
            base = self.opts.pod_name
        else:  # outside a Pod the Lease is the natural subject
            involved = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "name": self.opts.lease_name,
                "namespace": self.namespace,
            }
            base = self.opts.lease_name
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": f"{base}.{time.time_ns():x}",
                "namespace": self.namespace,
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
        self._background.add(task)
        task.add_done_callback(self._background.discard)

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
                api = await self._ensure_api()
                async with self._lock:
                    await self._release(api)
            except Exception:
                continue
            if await self._apply_labels("backup") or not (
                self.opts.label_pod or self.opts.label_node
            ):
                event(
                    logging.INFO,
                    "kubernetes: apiserver reachable again; BACKUP state recorded",
                    vip=self.vip.name,
                    event="k8s_backup_recorded",
                )
                return

    # -- vip-sidecar check -------------------------------------------------------------
    async def preflight(self) -> list[tuple[bool, str]]:
        """Read-only and dry-run calls: proves connectivity and every RBAC verb without
        changing anything."""
        lines: list[tuple[bool, str]] = []
        try:
            api = await self._ensure_api()
        except Exception as exc:
            return [(False, f"client configuration: {type(exc).__name__}: {exc}")]
        host = api.api_client.configuration.host
        lines.append((True, f"{self.source} -> {host}; identity {self.opts.identity}"))
        lines.append(
            (
                True,
                f"lease {self.lease_ref}, duration {self.opts.lease_duration}s, renew every "
                f"{self.opts.renew_interval:g}s, apiserver_outage="
                f"{self.opts.apiserver_outage.value}",
            )
        )

        async def probe(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
            try:
                result = await call()
            except KubeApiError as exc:
                lines.append((False, f"{what}: {exc}"))
                return None
            lines.append((True, what))
            return result if result is not None else True

        record: LeaseRecord | None = None
        try:
            record = await self._read(api)
            if record is None:
                lines.append((True, "get lease: not created yet"))
            else:
                holder = record.holder or "nobody"
                lines.append(
                    (
                        True,
                        f"get lease: held by {holder}, leaseTransitions={record.transitions}",
                    )
                )
        except KubeApiError as exc:
            lines.append((False, f"get lease: {exc}"))
        probe_body = self._claim_body(record)
        if record is None:
            await probe("create lease (dry run)", lambda: api.create_lease(probe_body, True))
        else:
            await probe(
                "update lease (dry run)",
                lambda: api.update_lease(self.opts.lease_name, probe_body, True),
            )
        if self.opts.pod_name:
            pod = self.opts.pod_name
            labels: dict[str, str | None] = {self.opts.label_key: "backup"}
            await probe(f"get pod {pod}", lambda: api.get_pod(pod))
            if self.opts.label_pod:
                await probe(
                    f"patch pod {pod} (dry run)", lambda: api.patch_pod_labels(pod, labels, True)
                )
        else:
            lines.append((True, "no POD_NAME: no pod label; events go to the Lease"))
        if self.opts.label_node and self.opts.node_name:
            node = self.opts.node_name
            node_labels: dict[str, str | None] = {self.opts.label_key: "backup"}
            await probe(f"get node {node}", lambda: api.get_node(node))
            await probe(
                f"patch node {node} (dry run)",
                lambda: api.patch_node_labels(node, node_labels, True),
            )
        if self.opts.events:
            now = format_time(self._wall())
            ev = {
                "metadata": {"name": f"{self.opts.lease_name}.preflight"},
                "involvedObject": {
                    "kind": "Lease",
                    "name": self.opts.lease_name,
                    "namespace": self.namespace,
                },
                "reason": "Preflight",
                "message": "vip-sidecar check",
                "type": "Normal",
                "firstTimestamp": now,
                "lastTimestamp": now,
            }
            await probe("create event (dry run)", lambda: api.create_event(ev, True))
        lines.append(
            (
                True,
                "RBAC needed: "
                + ", ".join(
                    sorted(f"{g or 'core'}/{r}:{v}" for g, r, v in rbac_triples(self.opts.calls))
                ),
            )
        )
        return lines


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> KubernetesProvider:
    return KubernetesProvider(spec, vip, config)
