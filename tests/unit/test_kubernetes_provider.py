"""The Kubernetes provider's decisions, with an injectable clock and no sleeping.

The provider talks to `StoreApi`: an in-memory object store (tests/unit/k8s_store.py)
(same 409/404/validation semantics as over HTTP), plus switches for outages, 403s and
writes injected between our read and our write (races). Its sleep advances a FakeClock,
so a 10 s lease expires in microseconds of real time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from tests.unit.fakes import FakeClock
from tests.unit.k8s_store import ApiError, Store
from vip_sidecar.config import ProviderSpec, build_config
from vip_sidecar.providers.base import OwnershipLost, ProviderConfigError, Timing, Veto, VipContext
from vip_sidecar.providers.kubernetes import KubernetesProvider, LeaseLost, create, parse_options
from vip_sidecar.providers.kubernetes.api import (
    API_CALLS,
    EVENT_CREATE,
    EVENT_PATCH,
    LEASE_CREATE,
    LEASE_GET,
    LEASE_UPDATE,
    NODE_GET,
    NODE_PATCH,
    POD_GET,
    POD_PATCH,
    ApiCall,
    ApiFailure,
    KubeApiError,
)
from vip_sidecar.providers.kubernetes.publish import (
    AGGREGATE_AFTER,
    COMBINED,
    SPAM_BURST,
    SPAM_REFILL_S,
)

NS = "ns"
LEASE = "vip-sidecar-vhid5"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
CONFIG = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 5, "pass": "x",
                       "addr": "10.0.0.100"})
VIP = CONFIG.vips[0]
FAILURES = {409: ApiFailure.CONFLICT, 404: ApiFailure.NOT_FOUND, 403: ApiFailure.FORBIDDEN,
            400: ApiFailure.INVALID, 422: ApiFailure.INVALID}


class StoreApi:
    """KubeApi's eight calls over the in-memory store, recording each call."""

    def __init__(self, store: Store, namespace: str = NS) -> None:
        self.store = store
        self.namespace = namespace
        self.calls: list[ApiCall] = []
        self.down = False
        self.deny: set[ApiCall] = set()
        #: scripted failures: the next calls of a kind raise these, in order
        self.script: dict[ApiCall, list[KubeApiError]] = {}
        self.lost_reply: set[ApiCall] = set()
        self.before: dict[ApiCall, Callable[[], None]] = {}
        self.api_client = SimpleNamespace(configuration=SimpleNamespace(host="in-process"))

    async def _do(self, call: ApiCall, fn: Callable[[], Any]) -> Any:
        self.calls.append(call)
        await asyncio.sleep(0)
        hook = self.before.pop(call, None)
        if hook is not None:
            hook()
        if self.down:
            raise KubeApiError(call, ApiFailure.UNAVAILABLE, 0, "unreachable: connection refused")
        if call in self.deny:
            raise KubeApiError(call, ApiFailure.FORBIDDEN, 403, "HTTP 403: forbidden")
        if self.script.get(call):
            raise self.script[call].pop(0)
        try:
            if call in self.lost_reply:  # it lands, but the reply is lost (a reset)
                self.lost_reply.discard(call)
                fn()
                raise KubeApiError(call, ApiFailure.UNAVAILABLE, 0, "unreachable: reset")
            return fn()
        except ApiError as exc:
            failure = FAILURES.get(exc.code, ApiFailure.UNAVAILABLE)
            raise KubeApiError(call, failure, exc.code, f"HTTP {exc.code}: {exc.message}"
                               ) from None

    def key(self, resource: str, name: str) -> tuple[str, str, str, str]:
        group = "coordination.k8s.io" if resource == "leases" else ""
        ns = "" if resource == "nodes" else self.namespace
        return (group, resource, ns, name)

    async def get_lease(self, name):
        try:
            return await self._do(LEASE_GET, lambda: self.store.get(self.key("leases", name)))
        except KubeApiError as exc:
            if exc.failure is ApiFailure.NOT_FOUND:
                return None
            raise

    async def create_lease(self, body, dry_run=False):
        name = body["metadata"]["name"]
        return await self._do(LEASE_CREATE, lambda: self.store.create(
            self.key("leases", name), body, dry_run=dry_run))

    async def update_lease(self, name, body, dry_run=False):
        return await self._do(LEASE_UPDATE, lambda: self.store.update(
            self.key("leases", name), body, dry_run=dry_run))

    async def get_pod(self, name):
        return await self._do(POD_GET, lambda: self.store.get(self.key("pods", name)))

    async def patch_pod_labels(self, name, labels, dry_run=False):
        return await self._do(POD_PATCH, lambda: self.store.patch(
            self.key("pods", name), {"metadata": {"labels": labels}}, dry_run=dry_run))

    async def get_node(self, name):
        return await self._do(NODE_GET, lambda: self.store.get(self.key("nodes", name)))

    async def patch_node_labels(self, name, labels, dry_run=False):
        return await self._do(NODE_PATCH, lambda: self.store.patch(
            self.key("nodes", name), {"metadata": {"labels": labels}}, dry_run=dry_run))

    async def create_event(self, body, dry_run=False):
        name = body["metadata"]["name"]
        return await self._do(EVENT_CREATE, lambda: self.store.create(
            self.key("events", name), body, dry_run=dry_run))

    async def patch_event(self, name, changes):
        return await self._do(EVENT_PATCH, lambda: self.store.patch(
            self.key("events", name), changes))

    async def close(self):
        pass


class World:
    """One store, one clock, any number of nodes."""

    def __init__(self) -> None:
        self.store = Store()
        self.clock = FakeClock(1000.0)
        self.start = self.clock.now
        self.ticks: list[Callable[[], Any]] = []  # run on every fake sleep (peers renewing)
        for n in "abc":
            self.store.put("", "pods", NS, f"pod-{n}", {"metadata": {"labels": {"app": "x"}}})
            self.store.put("", "nodes", "", f"node-{n}", {"metadata": {"labels": {"zone": n}}})

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.clock.now - self.start)

    def skewed_wall(self, skew_s: float) -> Callable[[], datetime]:
        """A node's wall clock running skew_s ahead of (behind, if negative) the others."""
        return lambda: self.wall() + timedelta(seconds=skew_s)

    async def sleep(self, seconds: float) -> None:
        self.clock.advance(seconds)
        for tick in list(self.ticks):
            await tick()
        await asyncio.sleep(0)

    def node(self, n: str, *, env: dict[str, str] | None = None, timeout: float = 30.0,
             skew: float = 0.0, **opts: Any) -> tuple[KubernetesProvider, StoreApi, VipContext]:
        options = {"lease_duration": 10, "renew_interval": 2, **opts}
        spec = ProviderSpec("kubernetes", options, timeout)
        environ = {"POD_NAME": f"pod-{n}", "NODE_NAME": f"node-{n}", "POD_NAMESPACE": NS,
                   **(env or {})}
        api = StoreApi(self.store)
        p = KubernetesProvider(spec, VIP, CONFIG, environ=environ, api=api,  # type: ignore[arg-type]
                               clock=self.clock, wall=self.skewed_wall(skew), sleep=self.sleep)
        ctx = VipContext(VIP, f"node-{n}", reason="master_down")
        return p, api, ctx

    def lease(self) -> dict[str, Any]:
        obj = self.store.peek("coordination.k8s.io", "leases", NS, LEASE)
        assert obj is not None
        return obj["spec"]

    def labels(self, kind: str, name: str) -> dict[str, str]:
        ns = "" if kind == "nodes" else NS
        obj = self.store.peek("", kind, ns, name) or {}
        return obj.get("metadata", {}).get("labels", {})

    def events(self) -> list[dict[str, Any]]:
        evs = self.store.list("", "events", NS)
        return sorted(evs, key=lambda e: int(e["metadata"]["resourceVersion"]))


def unavailable(call: ApiCall, status: int = 503, retry_after: float | None = None
                ) -> KubeApiError:
    return KubeApiError(call, ApiFailure.UNAVAILABLE, status, f"HTTP {status}",
                        retry_after=retry_after)


async def settle(p: KubernetesProvider) -> None:
    """Let background event tasks finish."""
    for _ in range(5):
        await asyncio.sleep(0)
    if p.publisher.background:
        await asyncio.wait(set(p.publisher.background), timeout=1)


async def promote(p: KubernetesProvider, ctx: VipContext) -> None:
    await p.pre_master(ctx)
    await p.up(ctx)


@pytest.fixture
def world() -> World:
    return World()


# ------------------------------------------------------------------ acquisition
async def test_first_promotion_creates_the_lease_labels_and_reports(world):
    a, api, ctx = world.node("a", label_node=True)
    await a.init()
    await promote(a, ctx)
    spec = world.lease()
    assert spec["holderIdentity"] == "pod-a"
    assert spec["leaseDurationSeconds"] == 10 and spec["leaseTransitions"] == 0
    assert world.labels("pods", "pod-a") == {"app": "x", "vip-sidecar.io/vhid5": "master"}
    assert world.labels("nodes", "node-a") == {"zone": "a", "vip-sidecar.io/vhid5": "master"}
    await settle(a)
    ev = world.events()[-1]
    assert ev["reason"] == "BecameMaster" and ev["type"] == "Normal"
    assert "BACKUP -> MASTER (master_down)" in ev["message"]
    assert ev["involvedObject"]["kind"] == "Pod" and ev["involvedObject"]["name"] == "pod-a"
    assert ev["involvedObject"]["uid"]  # from init()'s pod read: kubectl describe finds it
    assert api.calls[:2] == [POD_GET, NODE_GET]


async def test_a_valid_lease_of_another_node_vetoes_without_writing(world):
    a, _, ca = world.node("a")
    b, bapi, cb = world.node("b", acquire_wait=0)
    await promote(a, ca)
    before = dict(world.lease())
    with pytest.raises(Veto, match=r"lease ns/vip-sidecar-vhid5 is held by pod-a \(valid for"):
        await b.pre_master(cb)
    assert world.lease() == before
    assert LEASE_UPDATE not in bapi.calls and LEASE_CREATE not in bapi.calls
    await settle(b)
    refused = [e for e in world.events() if e["reason"] == "PromotionRefused"]
    assert refused and refused[-1]["type"] == "Warning"


async def test_backup_waits_for_a_crashed_holder_then_takes_over_and_fixes_its_labels(world):
    a, _, ca = world.node("a", label_node=True)
    b, _, cb = world.node("b", label_node=True)
    await promote(a, ca)
    assert world.labels("pods", "pod-a")["vip-sidecar.io/vhid5"] == "master"
    world.clock.advance(3.0)  # a dies right after renewing: CARP notices 3 s later
    started = world.clock.now
    await b.pre_master(cb)
    waited = world.clock.now - started
    # b never watched the Lease: it must see it unchanged for a whole 10 s from its
    # first look (client-go's rule); a's renewTime is not trusted
    assert waited == pytest.approx(10.0, abs=0.6)
    await b.up(cb)
    spec = world.lease()
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 1
    # a was killed: it never said backup; b relabels it from the Lease's annotations
    assert world.labels("pods", "pod-a")["vip-sidecar.io/vhid5"] == "backup"
    assert world.labels("nodes", "node-a")["vip-sidecar.io/vhid5"] == "backup"
    assert world.labels("pods", "pod-b")["vip-sidecar.io/vhid5"] == "master"
    await settle(b)
    msg = [e for e in world.events() if e["reason"] == "BecameMaster"][-1]["message"]
    assert "waited 10." in msg and "leaseTransitions=1" in msg


async def test_backup_stops_waiting_when_the_holder_renews_it_is_alive(world):
    a, _, ca = world.node("a")
    b, _, cb = world.node("b")
    await promote(a, ca)

    async def a_keeps_renewing():
        await a.check(ca)

    world.ticks.append(a_keeps_renewing)  # split brain: a is alive, b cannot hear it
    started = world.clock.now
    with pytest.raises(Veto, match="renewed it while we waited: the holder is alive"):
        await b.pre_master(cb)
    assert world.clock.now - started <= 2.5  # one renewal period, not the lease duration
    assert world.lease()["holderIdentity"] == "pod-a"


async def test_graceful_handover_takes_the_released_lease_at_once(world):
    a, _, ca = world.node("a")
    b, _, cb = world.node("b")
    await promote(a, ca)
    released = []

    async def a_steps_down_after_one_second():
        if not released and world.clock.now - started >= 1.0:
            released.append(world.clock.now)
            await a.down(ca)

    world.ticks.append(a_steps_down_after_one_second)
    started = world.clock.now
    await b.pre_master(cb)
    assert world.clock.now - released[0] <= 0.6  # one poll after the release
    assert world.lease()["holderIdentity"] == "pod-b"
    assert world.lease()["leaseTransitions"] == 1


async def test_a_conflict_lost_to_another_writer_vetoes(world):
    b, bapi, cb = world.node("b")
    await b.down(cb)  # creates nothing: there is no lease yet
    world.store.put("coordination.k8s.io", "leases", NS, LEASE, {"spec": {"leaseTransitions": 2}})

    def c_wins_the_race():
        world.store.update(("coordination.k8s.io", "leases", NS, LEASE), {
            "metadata": {"name": LEASE},
            "spec": {"holderIdentity": "pod-c", "leaseDurationSeconds": 10,
                     "renewTime": world.wall().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                     "leaseTransitions": 3},
        })

    bapi.before[LEASE_UPDATE] = c_wins_the_race
    with pytest.raises(Veto, match="409 Conflict on lease ns/vip-sidecar-vhid5: pod-c took it"):
        await b.pre_master(cb)
    assert world.lease()["holderIdentity"] == "pod-c"


async def test_a_conflict_from_an_unrelated_edit_is_retried(world):
    b, bapi, cb = world.node("b")
    world.store.put("coordination.k8s.io", "leases", NS, LEASE, {"spec": {"leaseTransitions": 2}})

    def someone_annotates():
        obj = world.store.get(("coordination.k8s.io", "leases", NS, LEASE))
        obj["metadata"]["annotations"] = {"team": "net"}
        world.store.update(("coordination.k8s.io", "leases", NS, LEASE), obj)

    bapi.before[LEASE_UPDATE] = someone_annotates
    await b.pre_master(cb)
    assert world.lease()["holderIdentity"] == "pod-b"
    assert world.lease()["leaseTransitions"] == 3


async def test_two_conflicts_in_a_row_veto(world):
    b, bapi, cb = world.node("b")
    world.store.put("coordination.k8s.io", "leases", NS, LEASE, {"spec": {}})

    def bump():
        obj = world.store.get(("coordination.k8s.io", "leases", NS, LEASE))
        world.store.update(("coordination.k8s.io", "leases", NS, LEASE), obj)
        bapi.before[LEASE_UPDATE] = bump  # and again next time

    bapi.before[LEASE_UPDATE] = bump
    with pytest.raises(Veto, match=r"409 Conflict on lease .* twice"):
        await b.pre_master(cb)


async def test_backup_asked_to_promote_during_an_outage_refuses(world):
    b, bapi, cb = world.node("b")
    bapi.down = True
    started = world.clock.now
    with pytest.raises(Veto, match=r"apiserver unreachable .*a node that cannot "
                                   r"confirm does not claim"):
        await b.pre_master(cb)
    # it retried for the promotion budget (30 s timeout - 2 s request - 1 s), then gave up
    spent = world.clock.now - started
    assert b.opts.acquire_budget - 3.5 <= spent <= b.opts.acquire_budget
    assert bapi.calls.count(LEASE_GET) >= 10


async def test_forbidden_lease_vetoes_with_the_rbac_message(world):
    b, bapi, cb = world.node("b")
    bapi.deny.add(LEASE_CREATE)
    with pytest.raises(Veto, match="403"):
        await b.pre_master(cb)


# ------------------------------------------------------------------ while master
async def test_renewal_is_one_conditional_write_per_period_and_no_reads(world):
    a, api, ca = world.node("a")
    await promote(a, ca)
    api.calls.clear()
    for _ in range(20):  # 20 ticks of 1 s = 10 renewals of a 2 s period
        world.clock.advance(a.reassert_interval)
        assert await a.check(ca) is False
    assert api.calls.count(LEASE_UPDATE) == 10
    assert LEASE_GET not in api.calls
    assert world.lease()["leaseTransitions"] == 0


async def test_renewal_that_finds_another_holder_steps_down_at_once(world):
    a, _, ca = world.node("a")
    await promote(a, ca)
    obj = world.store.get(("coordination.k8s.io", "leases", NS, LEASE))
    obj["spec"]["holderIdentity"] = "pod-z"
    world.store.update(("coordination.k8s.io", "leases", NS, LEASE), obj)
    world.clock.advance(2.0)
    with pytest.raises(LeaseLost, match="now held by pod-z"):
        await a.check(ca)
    await settle(a)
    assert world.events()[-1]["reason"] == "LeaseLost"


async def test_renewal_after_a_foreign_edit_keeps_the_lease(world):
    a, _, ca = world.node("a")
    await promote(a, ca)
    obj = world.store.get(("coordination.k8s.io", "leases", NS, LEASE))
    obj["metadata"]["annotations"]["team"] = "net"
    world.store.update(("coordination.k8s.io", "leases", NS, LEASE), obj)
    world.clock.advance(2.0)
    assert await a.check(ca) is False
    assert world.lease()["holderIdentity"] == "pod-a"


async def test_a_deleted_lease_is_recreated_by_its_holder(world):
    a, _, ca = world.node("a")
    await promote(a, ca)
    world.store.delete("coordination.k8s.io", "leases", NS, LEASE)
    world.clock.advance(2.0)
    await a.check(ca)
    assert world.lease()["holderIdentity"] == "pod-a"


async def measure_outage(world, policy: str) -> float:
    a, api, ca = world.node("a", apiserver_outage=policy)
    await promote(a, ca)
    api.down = True
    start = world.clock.now
    while world.clock.now - start < 60:
        world.clock.advance(a.reassert_interval)
        try:
            await a.check(ca)
        except OwnershipLost as exc:
            assert "stepping down" in str(exc) and f"apiserver_outage={policy}" in str(exc)
            return world.clock.now - start
    raise AssertionError("never stepped down")


async def test_failsafe_keeps_master_for_the_lease_term_then_steps_down(world):
    kept = await measure_outage(world, "failsafe")
    # 10 s lease; the last decision must come one decision latency (1.1 tick + 1 s
    # housekeeping + 2 s request timeout = 4.1 s) before the term ends
    assert 5.0 <= kept <= 10.0
    assert kept == pytest.approx(6.0, abs=1.01)


async def test_demote_policy_steps_down_at_the_first_failed_renewal(world):
    kept = await measure_outage(world, "demote")
    assert kept <= 2.0  # the next renewal (2 s period)


async def test_failsafe_survives_an_outage_shorter_than_the_lease(world):
    a, api, ca = world.node("a")
    await promote(a, ca)
    api.down = True
    for _ in range(4):
        world.clock.advance(1.0)
        assert await a.check(ca) is False
    api.down = False
    back = world.clock.now
    while a.holder.outage_since is not None:
        world.clock.advance(1.0)
        await a.check(ca)
    # the next renewal attempt (spaced by renew_interval, 2 s) ends the outage
    assert world.clock.now - back <= 2.0
    for _ in range(30):  # the term is counted from the new renewal again
        world.clock.advance(1.0)
        await a.check(ca)
    assert world.lease()["holderIdentity"] == "pod-a"


async def test_failsafe_counts_a_hung_renewal_as_a_failure(world):
    a, api, ca = world.node("a")
    await promote(a, ca)
    api.deny.add(LEASE_UPDATE)  # RBAC revoked: same policy as unreachable
    world.clock.advance(2.0)
    assert await a.check(ca) is False
    assert a.holder.outage_since is not None


async def test_label_failures_do_not_fail_up_and_are_repaired_by_check(world):
    a, api, ca = world.node("a")
    api.script[POD_PATCH] = [unavailable(POD_PATCH, 503)]
    await promote(a, ca)  # the lease is the fence; a label is a signal, not a reason to fail
    assert "vip-sidecar.io/vhid5" not in world.labels("pods", "pod-a")
    world.clock.advance(1.0)
    assert await a.check(ca) is True  # repaired
    assert world.labels("pods", "pod-a")["vip-sidecar.io/vhid5"] == "master"


# ------------------------------------------------------------------ stepping down
async def test_down_releases_and_the_next_holder_increments_transitions(world):
    a, _, ca = world.node("a")
    b, _, cb = world.node("b")
    await promote(a, ca)
    await a.down(ca)
    spec = world.lease()
    assert "holderIdentity" not in spec and spec["leaseTransitions"] == 0
    assert world.labels("pods", "pod-a") == {"app": "x", "vip-sidecar.io/vhid5": "backup"}
    await promote(b, cb)
    assert world.lease()["holderIdentity"] == "pod-b"
    assert world.lease()["leaseTransitions"] == 1
    await settle(a)
    backup = [e for e in world.events() if e["reason"] == "BecameBackup"][-1]
    assert "MASTER -> BACKUP" in backup["message"] and "lease released" in backup["message"]


async def test_restart_releases_a_lease_left_from_a_previous_life(world):
    a, _, ca = world.node("a")
    await promote(a, ca)
    a2, _, ca2 = world.node("a")  # kill -9 and restart: same pod name, fresh process
    await a2.down(ca2)  # the runtime's INIT -> BACKUP
    assert "holderIdentity" not in world.lease()


async def test_down_during_an_outage_retries_until_the_apiserver_answers(world):
    a, api, ca = world.node("a")
    await promote(a, ca)
    api.down = True
    await a.down(ca)
    assert world.lease()["holderIdentity"] == "pod-a"
    assert a._retry is not None and not a._retry.done()
    api.down = False
    await asyncio.wait_for(a._retry, timeout=5)
    assert "holderIdentity" not in world.lease()
    assert world.labels("pods", "pod-a")["vip-sidecar.io/vhid5"] == "backup"


async def test_down_does_not_touch_a_lease_someone_else_holds(world):
    a, _, ca = world.node("a")
    b, _, cb = world.node("b")
    await promote(a, ca)
    world.clock.advance(20)
    await promote(b, cb)
    await a.down(ca)
    assert world.lease()["holderIdentity"] == "pod-b"


async def test_up_without_a_held_lease_acquires_or_fails(world):
    a, _, ca = world.node("a")
    b, _, cb = world.node("b")
    await b.up(cb)  # no pre_master (a runtime without vetoes): up takes the lease itself
    assert world.lease()["holderIdentity"] == "pod-b"
    with pytest.raises(LeaseLost):
        await a.up(ca)


# ------------------------------------------------------------------ RBAC contract
async def test_a_full_cycle_uses_exactly_the_declared_calls(world):
    a, aapi, ca = world.node("a", label_node=True)
    b, bapi, cb = world.node("b", label_node=True)
    for p, c in ((a, ca), (b, cb)):
        await p.init()
        await p.down(c)
    await promote(a, ca)
    world.clock.advance(2.0)
    await a.check(ca)
    world.clock.advance(30)  # a "dies"
    await promote(b, cb)
    await b.down(cb)
    await b.down(cb)  # BACKUP -> BACKUP twice: the second Event is a count patch
    await b.down(cb)
    for p in (a, b):
        await settle(p)
        await p.preflight()
    used = set(aapi.calls) | set(bapi.calls)
    assert used == set(API_CALLS)


async def test_without_node_labels_no_node_call_is_made(world):
    a, api, ca = world.node("a")
    await a.init()
    await promote(a, ca)
    await a.down(ca)
    await settle(a)
    assert not {c for c in api.calls if c.resource == "nodes"}
    assert a.opts.calls == frozenset(c for c in API_CALLS if c.resource != "nodes")


async def test_preflight_uses_dry_runs_and_changes_nothing(world):
    a, _, _ = world.node("a", label_node=True)
    before = world.store._rv
    lines = await a.preflight()
    assert all(ok for ok, _ in lines), lines
    assert world.store._rv == before
    text = "\n".join(t for _, t in lines)
    assert "create lease (dry run)" in text and "patch node node-a (dry run)" in text


# ------------------------------------------------------------------ options
def spec(**opts: Any) -> ProviderSpec:
    return ProviderSpec("kubernetes", opts, 30.0)


ENV = {"POD_NAME": "p", "NODE_NAME": "n", "POD_NAMESPACE": "ns"}


def test_defaults_and_derived_names():
    opts, timeout = parse_options(spec(), VIP, ENV)
    assert (opts.lease_name, opts.namespace, opts.identity) == ("vip-sidecar-vhid5", "ns", "p")
    assert opts.label_key == "vip-sidecar.io/vhid5"
    assert (opts.lease_duration, opts.renew_interval, opts.acquire_wait) == (10, 2.0, 11.0)
    assert opts.apiserver_outage.value == "failsafe" and opts.label_pod and not opts.label_node
    assert opts.acquire_wait <= timeout - 2 * opts.request_timeout - 1


@pytest.mark.parametrize(("env", "identity"), [
    ({"POD_NAME": "p", "NODE_NAME": "n"}, "p"),
    ({"NODE_NAME": "n"}, "n"),
])
def test_identity_prefers_the_pod_name(env, identity):
    assert parse_options(spec(), VIP, env)[0].identity == identity


def test_identity_falls_back_to_the_hostname():
    import socket

    assert parse_options(spec(), VIP, {})[0].identity == socket.gethostname()


@pytest.mark.parametrize(("opts", "env", "message"), [
    ({"renew_interval": 6}, ENV, "at most half of lease_duration"),
    ({"lease_duration": 2.5}, ENV, "whole seconds"),
    ({"apiserver_outage": "ignore"}, ENV, "one of failsafe, demote"),
    ({"lease_nme": "x"}, ENV, r"unknown options \['lease_nme'\]"),
    ({"namespace": "other"}, ENV, "differs from POD_NAMESPACE"),
    ({"label_node": True}, {"POD_NAME": "p"}, "needs the node name"),
    ({"acquire_wait": 29}, ENV, "at most"),
    ({"lease_name": "Bad_Name"}, ENV, "DNS-1123"),
    ({"label_pod": "maybe"}, ENV, "boolean"),
])
def test_bad_options_are_refused_at_start(opts, env, message):
    with pytest.raises(ProviderConfigError, match=message):
        parse_options(spec(**opts), VIP, env)


def test_the_provider_timeout_must_fit_the_calls():
    with pytest.raises(ProviderConfigError, match="provider timeout"):
        parse_options(ProviderSpec("kubernetes", {"request_timeout": 5}, 8.0), VIP, ENV)


def test_create_is_the_entry_point_the_runtime_loads():
    p = create(spec(kubeconfig="/nonexistent"), VIP, CONFIG)
    assert isinstance(p, KubernetesProvider) and p.can_veto
    assert p.reassert_interval == 1.0


def test_no_pod_name_means_no_pod_label_and_events_on_the_lease(world):
    a, _, _ = world.node("a", env={"POD_NAME": ""})
    assert not a.opts.label_pod and a.opts.identity == "node-a"


def test_listing_kubernetes_after_the_alias_is_warned_about():
    for order, warned in ((["kubernetes", "alias"], False), (["alias", "kubernetes"], True)):
        cfg = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 5, "pass": "x",
                            "addr": "10.0.0.100", "providers": order})
        vip = cfg.vips[0]
        p = KubernetesProvider(vip.providers[order.index("kubernetes")], vip, cfg, environ=ENV)
        assert (p.order_warning() is not None) is warned
        if warned:
            assert "listed after alias" in p.order_warning()


# ------------------------------------------------------------------ clock skew (issue 18)
#: what the runtime tells a provider with a 1 s check tick (tick + 10 % jitter + grid)
RUNTIME = Timing(check_within_s=2.1, grid_s=1.0)


@pytest.mark.parametrize("skew", [-30.0, -6.0, 6.0, 30.0])
@pytest.mark.parametrize(("duration", "renew"), [(4, 1), (10, 2)])
async def test_a_skewed_backup_never_takes_a_lease_the_master_renews(world, skew, duration, renew):
    """Issue 18: with the old renewTime rule a backup 6 s ahead took a 4 s lease renewed
    every second. Wall clocks now only stamp renewTime; nobody reads them back."""
    a, _, ca = world.node("a", lease_duration=duration, renew_interval=renew)
    b, bapi, cb = world.node("b", skew=skew, lease_duration=duration, renew_interval=renew)
    await promote(a, ca)

    async def a_renews():
        await a.check(ca)

    world.ticks.append(a_renews)
    for _ in range(5):  # asked again and again (CARP blocked: split brain)
        world.clock.advance(1.0)
        with pytest.raises(Veto, match="held by pod-a"):
            await b.pre_master(cb)
        assert world.lease()["holderIdentity"] == "pod-a"
    assert LEASE_UPDATE not in bapi.calls and LEASE_CREATE not in bapi.calls


@pytest.mark.parametrize("skew", [-30.0, 30.0])
async def test_a_skewed_backup_waits_a_full_duration_for_a_dead_holder(world, skew):
    a, _, ca = world.node("a", skew=-skew)
    b, _, cb = world.node("b", skew=skew)
    await promote(a, ca)  # then a dies
    started = world.clock.now
    await b.pre_master(cb)
    assert world.clock.now - started == pytest.approx(10.0, abs=0.6)


@pytest.mark.parametrize(("a_skew", "b_skew"), [(-30.0, 30.0), (30.0, -30.0), (0.0, 0.0)])
async def test_in_an_outage_the_master_steps_down_before_a_backup_can_take_the_lease(
        world, a_skew, b_skew):
    """a is cut off from the apiserver, b is not and asks for the lease every tick. The
    documented margin: a decides to step down at least one decision latency (1.1 tick +
    1 s grid + request_timeout = 4.1 s here) before its term ends; b cannot take the
    lease before that term ends. Measured: 4.0 s with 1 s ticks."""
    a, aapi, ca = world.node("a", skew=a_skew)
    b, _, cb = world.node("b", skew=b_skew, acquire_wait=0)
    ca.timing = RUNTIME
    await promote(a, ca)
    world.clock.advance(2.0)
    await a.check(ca)  # the last successful renewal
    last_renewal = a.holder.last_renew
    aapi.down = True
    a_down = b_take = None
    while b_take is None:
        world.clock.advance(1.0)
        if a_down is None:
            try:
                await a.check(ca)
            except LeaseLost:
                a_down = world.clock.now
        try:
            await b.pre_master(cb)
            b_take = world.clock.now
        except Veto:
            pass
        assert world.clock.now - last_renewal < 60
    assert a_down is not None
    assert b_take - last_renewal >= 10.0  # never before the term b observed
    margin = b_take - a_down
    assert margin >= 4.0, margin


# ------------------------------------------------------------------ API trouble (issue 18)
async def test_transient_errors_during_a_promotion_are_retried_within_the_budget(world):
    b, bapi, cb = world.node("b")
    bapi.script[LEASE_GET] = [unavailable(LEASE_GET, 503), unavailable(LEASE_GET, 0)]
    bapi.script[LEASE_CREATE] = [unavailable(LEASE_CREATE, 500)]
    started = world.clock.now
    await b.pre_master(cb)  # no veto on the first failure
    await b.up(cb)
    assert world.lease()["holderIdentity"] == "pod-b"
    assert world.clock.now - started < 3.0 and b.holder.retries == 3


async def test_429_retry_after_is_honoured_while_acquiring(world):
    b, bapi, cb = world.node("b")
    bapi.script[LEASE_GET] = [unavailable(LEASE_GET, 429, retry_after=4.0)]
    started = world.clock.now
    await b.pre_master(cb)
    assert world.clock.now - started == pytest.approx(4.0, abs=0.01)


async def test_a_retry_after_beyond_the_budget_vetoes_at_once(world):
    b, bapi, cb = world.node("b")
    bapi.script[LEASE_GET] = [unavailable(LEASE_GET, 429, retry_after=60.0)]
    started = world.clock.now
    with pytest.raises(Veto, match="HTTP 429"):
        await b.pre_master(cb)
    assert world.clock.now == started  # no point sleeping past the budget


async def test_a_write_whose_reply_was_lost_is_recognised_as_ours(world):
    b, bapi, cb = world.node("b")
    bapi.lost_reply.add(LEASE_CREATE)
    await b.pre_master(cb)
    spec = world.lease()
    assert spec["holderIdentity"] == "pod-b" and spec["leaseTransitions"] == 0
    assert bapi.calls.count(LEASE_CREATE) == 1 and bapi.calls.count(LEASE_UPDATE) == 1


async def test_outage_renewals_are_spaced_by_the_renewal_interval(world):
    a, api, ca = world.node("a", lease_duration=20, renew_interval=2)
    ca.timing = RUNTIME
    await promote(a, ca)
    api.down = True
    api.calls.clear()
    for _ in range(10):
        world.clock.advance(1.0)
        await a.check(ca)
    assert api.calls.count(LEASE_UPDATE) == 5  # every 2 s, not every 1 s tick


async def test_a_renewal_honours_retry_after(world):
    a, api, ca = world.node("a", lease_duration=20, renew_interval=2)
    ca.timing = RUNTIME
    await promote(a, ca)
    api.script[LEASE_UPDATE] = [unavailable(LEASE_UPDATE, 429, retry_after=7.0)]
    world.clock.advance(2.0)
    await a.check(ca)
    first = world.clock.now
    api.calls.clear()
    while LEASE_UPDATE not in api.calls:
        world.clock.advance(1.0)
        await a.check(ca)
    assert world.clock.now - first == pytest.approx(7.0)
    assert a.holder.outage_since is None  # renewed: the outage is over


async def test_renewal_keeps_labels_owner_references_and_finalizers_of_others(world):
    a, _, ca = world.node("a")
    await promote(a, ca)
    key = ("coordination.k8s.io", "leases", NS, LEASE)
    obj = world.store.get(key)
    obj["metadata"].update(labels={"team": "net"}, finalizers=["example.com/keep"],
                           ownerReferences=[{"apiVersion": "v1", "kind": "ConfigMap",
                                             "name": "o", "uid": "u"}])
    obj["metadata"]["annotations"]["theirs"] = "1"
    world.store.update(key, obj)
    for _ in range(3):
        world.clock.advance(2.0)
        await a.check(ca)
    meta = world.store.get(key)["metadata"]
    assert meta["labels"] == {"team": "net"} and meta["finalizers"] == ["example.com/keep"]
    assert meta["ownerReferences"][0]["name"] == "o" and meta["annotations"]["theirs"] == "1"
    await a.down(ca)
    assert world.store.get(key)["metadata"]["labels"] == {"team": "net"}


# ------------------------------------------------------------------ labels (issue 18)
@pytest.mark.parametrize("status", [403, 422])
async def test_a_permanent_label_error_is_reported_once_and_not_retried(world, caplog, status):
    a, api, ca = world.node("a")
    failure = ApiFailure.FORBIDDEN if status == 403 else ApiFailure.INVALID
    api.script[POD_PATCH] = [KubeApiError(POD_PATCH, failure, status, f"HTTP {status}")]
    await promote(a, ca)
    for _ in range(10):
        world.clock.advance(1.0)
        await a.check(ca)
    await a.down(ca)
    for _ in range(10):  # as BACKUP: no retry loop, no API call
        await world.sleep(2.0)
    assert api.calls.count(POD_PATCH) == 1
    assert a._retry is None
    refused = [r for r in caplog.records if "not retried" in r.getMessage()]
    assert len(refused) == 1 and f"HTTP {status}" in refused[0].getMessage()


@pytest.mark.parametrize("key", ["vip sidecar/x", "example.com/", "Bad_Prefix/x", "-x", "x" * 64])
def test_label_key_must_be_a_qualified_name(key):
    with pytest.raises(ProviderConfigError, match=r"kubernetes\.label_key"):
        parse_options(spec(label_key=key), VIP, ENV)


def test_max_clock_skew_is_refused_with_the_reason():
    with pytest.raises(ProviderConfigError, match="local observation"):
        parse_options(spec(max_clock_skew=1), VIP, ENV)


# ------------------------------------------------------------------ events (issue 18)
async def test_repeated_events_are_aggregated_into_one_with_a_count(world):
    a, api, _ = world.node("a")
    for _ in range(3):
        a.publisher.emit("Warning", "PromotionRefused", "same words")
        await settle(a)
        world.clock.advance(1.0)
    evs = [e for e in world.events() if e["reason"] == "PromotionRefused"]
    assert len(evs) == 1 and evs[0]["count"] == 3
    assert api.calls.count(EVENT_CREATE) == 1 and api.calls.count(EVENT_PATCH) == 2


async def test_many_similar_events_are_combined_like_client_go(world):
    a, _, _ = world.node("a")
    for i in range(AGGREGATE_AFTER + 5):
        a.publisher.emit("Warning", "PromotionRefused", f"valid for {i}s more")
        await settle(a)
    evs = [e for e in world.events() if e["reason"] == "PromotionRefused"]
    assert len(evs) == AGGREGATE_AFTER + 1
    combined = [e for e in evs if e["message"].startswith(COMBINED)]
    assert len(combined) == 1 and combined[0]["count"] == 5
    assert combined[0]["message"] == COMBINED + f"valid for {AGGREGATE_AFTER + 4}s more"


async def test_events_are_rate_limited_per_reason(world):
    a, api, _ = world.node("a")
    for i in range(SPAM_BURST + 10):
        a.publisher.emit("Normal", "BecameBackup", f"m{i}")
        await settle(a)
    a.publisher.emit("Normal", "BecameMaster", "another reason has its own bucket")
    await settle(a)
    assert a.publisher.recorder.dropped == 10
    sent = len(api.calls)
    world.clock.advance(SPAM_REFILL_S)
    a.publisher.emit("Normal", "BecameBackup", "after the refill")
    await settle(a)
    assert len(api.calls) == sent + 1 and a.publisher.recorder.dropped == 10


# ------------------------------------------------------------------ client retry (issue 18)
def test_the_client_retries_a_stale_connection_once_but_never_a_timeout_or_a_post():
    from urllib3.exceptions import (
        ConnectTimeoutError,
        MaxRetryError,
        NewConnectionError,
        ProtocolError,
        ReadTimeoutError,
    )

    from vip_sidecar.providers.kubernetes.connect import stale_connection_retry

    stale = ProtocolError("Connection aborted.", ConnectionResetError(104, "reset"))
    retry = stale_connection_retry()
    for method in ("GET", "PUT"):  # dropped keep-alive connection: replayed once
        again = retry.increment(method, "/x", error=stale)
        with pytest.raises(MaxRetryError):
            again.increment(method, "/x", error=stale)
    for method in ("POST", "PATCH"):  # not idempotent here: the provider decides
        with pytest.raises(ProtocolError):
            retry.increment(method, "/x", error=stale)
    refused = NewConnectionError(None, "refused")  # nothing was sent: any method
    retry.increment("POST", "/x", error=refused)
    for timeout in (ReadTimeoutError(None, "/x", "timed out"), ConnectTimeoutError("timed out")):
        with pytest.raises(MaxRetryError) as err:  # the provider's deadlines decide
            retry.increment("GET", "/x", error=timeout)
        assert err.value.reason is timeout


async def test_status_reports_the_fence_and_its_counters(world):
    a, api, ca = world.node("a")
    api.script[LEASE_GET] = [unavailable(LEASE_GET)]
    await promote(a, ca)
    st = a.status()
    assert st["lease"] == f"{NS}/{LEASE}" and st["lease_held"] is True
    assert (st["acquire_retries"], st["events_dropped"], st["labels_refused"]) == (1, 0, 0)


@pytest.mark.parametrize(("status", "headers", "failure", "retry_after"), [
    (429, {"Retry-After": "3"}, ApiFailure.UNAVAILABLE, 3.0),
    (503, {"Retry-After": "600"}, ApiFailure.UNAVAILABLE, 60.0),  # capped
    (503, {"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}, ApiFailure.UNAVAILABLE, None),
    (500, {}, ApiFailure.UNAVAILABLE, None),
    (415, {}, ApiFailure.INVALID, None),  # never retried: the same body stays wrong
    (422, {}, ApiFailure.INVALID, None),
    (403, {}, ApiFailure.FORBIDDEN, None),
])
def test_api_errors_map_status_and_retry_after(status, headers, failure, retry_after):
    from kubernetes.client.exceptions import ApiException

    from vip_sidecar.providers.kubernetes.api import api_error

    exc = ApiException(status=status, reason="x")
    exc.headers = headers
    err = api_error(LEASE_GET, exc)
    assert (err.failure, err.retry_after) == (failure, retry_after)
    assert err.kind.value == ("retryable" if failure is ApiFailure.UNAVAILABLE else "permanent")
