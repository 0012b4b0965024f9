"""The Kubernetes provider against a REAL kube-apiserver + etcd (tests/k8s), in-process.

The control plane is built from Go modules by tests/k8s/build.sh and started once per
session; each test gets a fresh namespace. The provider is configured as in production (a
kubeconfig, or the in-cluster service account files) and authenticates with a real
ServiceAccount token from TokenRequest, bound to a Role made from the provider's own call
table, so the real RBAC authorizer judges every request. What the provider really sent is
read back from the apiserver's audit log. Outages are made by the real server (SIGSTOP)
or by tests/k8s/faultproxy.py in front of it (5xx, 429, hang, reset, refuse).
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from tests.k8s import grants
from vip_sidecar.config import Config, ProviderSpec, build_config
from vip_sidecar.providers.base import OwnershipLost, Veto, VipContext
from vip_sidecar.providers.kubernetes import KubernetesProvider
from vip_sidecar.providers.kubernetes.api import (
    API_CALLS,
    NAMESPACED_CALLS,
    POD_PATCH,
    rbac_triples,
)

pytestmark = pytest.mark.k8s_real

CONFIG = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 9, "pass": "x",
                       "addr": "10.0.0.99", "name": "ingress"})
VIP = CONFIG.vips[0]
LEASE = "vip-sidecar-ingress"
KEY = "vip-sidecar.io/ingress"
SA = "vip-sidecar"


@pytest.fixture
def bed(kube, kube_ns, tmp_path):
    """Two Pods on two Nodes and a ServiceAccount token allowed exactly the call table."""
    ns = kube_ns
    for n in "ab":
        kube.add_node(f"{ns}-node-{n}", {"kubernetes.io/hostname": f"{ns}-node-{n}"})
        kube.add_pod(ns, f"pod-{n}", f"{ns}-node-{n}", {"app": "vip-sidecar"})
    token = grants.service_account(kube, ns, SA)
    return ns, token


def provider(kube, ns: str, token: str, tmp: Path, n: str, server: str | None = None,
             wall: Callable[[], datetime] | None = None, config: Config = CONFIG,
             **opts) -> tuple[KubernetesProvider, VipContext]:
    """wall: the node's wall clock (issue 18's skew tests inject one)."""
    vip = config.vips[0]
    kubeconfig = kube.kubeconfig(tmp / f"kubeconfig-{n}", token=token, server=server)
    options = {"kubeconfig": kubeconfig, "lease_duration": 2, "renew_interval": 0.5,
               "request_timeout": 1.0, **opts}
    env = {"POD_NAME": f"pod-{n}", "NODE_NAME": f"{ns}-node-{n}", "POD_NAMESPACE": ns}
    p = KubernetesProvider(ProviderSpec("kubernetes", options, 10.0), vip, config, environ=env,
                           wall=wall)
    return p, VipContext(vip, f"node-{n}", reason="master_down")


async def run_checks(p: KubernetesProvider, ctx: VipContext, seconds: float) -> None:
    """What the runtime does while MASTER: check() every reassert_interval."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(p.reassert_interval)
        await p.check(ctx)


async def wait_until(pred, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        await asyncio.sleep(0.05)
    return pred()


async def test_full_cycle_uses_exactly_the_declared_calls(kube, bed, tmp_path):
    ns, token = bed
    t_start = time.time()
    a, ca = provider(kube, ns, token, tmp_path, "a", label_node=True)
    b, cb = provider(kube, ns, token, tmp_path, "b", label_node=True)
    for p, c in ((a, ca), (b, cb)):
        await p.init()
        await p.down(c)
    t0 = time.monotonic()
    await a.pre_master(ca)
    acquire_ms = (time.monotonic() - t0) * 1000
    await a.up(ca)
    assert kube.holder(ns, LEASE) == "pod-a"
    renewer = asyncio.ensure_future(run_checks(a, ca, 3.0))
    # split brain: b cannot hear a, asks for the lease while a renews
    with pytest.raises(Veto, match="holder is alive"):
        await b.pre_master(cb)
    await renewer
    # a crashes (stops renewing): b waits for the lease to run out, then takes over
    t0 = time.monotonic()
    await b.pre_master(cb)
    await b.up(cb)
    took = time.monotonic() - t0
    # b last saw the lease change at a's last renewal (<= 0.5 s before): 2 s lease from
    # then, plus a poll and the calls
    assert 1.0 <= took <= 2 + 0.5 + 0.5
    lease = kube.lease(ns, LEASE)["spec"]
    assert lease["holderIdentity"] == "pod-b" and lease["leaseTransitions"] == 1
    assert kube.pod_labels(ns, "pod-a")[KEY] == "backup"
    assert kube.pod_labels(ns, "pod-b")[KEY] == "master"
    assert kube.node_labels(f"{ns}-node-b")[KEY] == "master"
    assert kube.pod_labels(ns, "pod-a")["app"] == "vip-sidecar"  # merge, not replace
    await b.down(cb)
    assert kube.holder(ns, LEASE) is None
    await b.down(cb)  # BACKUP -> BACKUP twice: the repeat is a count patch of one Event
    await b.down(cb)
    for p in (a, b):
        await p.preflight()
        await p.close()
    # the real authorizer allowed every request, and they were exactly the declared calls
    mine = kube.requests_by(grants.user(ns, SA), since=t_start)
    # (404: the Lease did not exist yet; 409: a write lost a race or a dry-run create)
    assert mine and all(e.code < 400 or e.code in (404, 409) for e in mine), [
        (e.triple, e.code) for e in mine if e.code >= 400]
    assert {e.triple for e in mine} == rbac_triples(API_CALLS)
    reasons = [e["reason"] for e in kube.events(ns)]
    assert reasons.count("BecameMaster") == 2 and "PromotionRefused" in reasons
    print(f"\nreal apiserver: uncontested lease acquire {acquire_ms:.1f} ms; takeover of a "
          f"crashed holder's 2 s lease {took:.2f}s")


async def test_racing_nodes_one_wins_the_other_gets_a_real_conflict(kube, bed, tmp_path,
                                                                    make_proxy):
    """Both nodes read the same Lease and write it at once: etcd's resourceVersion check
    lets exactly one through; the loser reads again and refuses to claim. The proxy answers
    every Lease GET 0.3 s late, so both read the same version and both writes follow."""
    ns, token = bed
    proxy = make_proxy()
    kw = {"server": proxy.url, "acquire_wait": 0}
    a, ca = provider(kube, ns, token, tmp_path, "a", **kw)
    b, cb = provider(kube, ns, token, tmp_path, "b", **kw)
    await a.init()
    await b.init()
    # a held it and released it: the Lease exists, both must *update* resourceVersion N
    await a.pre_master(ca)
    await a.up(ca)
    await a.down(ca)
    since = time.time()
    proxy.set("late", delay=0.3, method="GET", match="/leases/")
    for _ in range(3):
        results = await asyncio.gather(a.pre_master(ca), b.pre_master(cb),
                                       return_exceptions=True)
        won = [(p, c) for (p, c), r in zip(((a, ca), (b, cb)), results, strict=True)
               if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], Veto) and "409 Conflict" in str(lost[0]), lost
        winner, ctx = won[0]
        assert kube.holder(ns, LEASE) == winner.opts.identity
        await winner.down(ctx)
        assert kube.holder(ns, LEASE) is None
    proxy.set(None)
    writes = [e for e in kube.requests_by(grants.user(ns, SA), since=since)
              if e.resource == "leases" and e.verb == "update"]
    # each round: one 200 for the winner, one real 409 from etcd for the loser (+ releases)
    assert sum(1 for e in writes if e.code == 409) == 3, [(e.code, e.at) for e in writes]
    await a.close()
    await b.close()


async def test_renewals_are_updates_from_the_master_only(kube, bed, tmp_path):
    ns, token = bed
    a, ca = provider(kube, ns, token, tmp_path, "a")
    await a.init()
    await a.pre_master(ca)
    await a.up(ca)
    await asyncio.sleep(0.5)  # the BecameMaster Event is sent in the background
    first = kube.lease(ns, LEASE)["spec"]["renewTime"]
    since = time.time()
    await run_checks(a, ca, 2.2)
    renewals = [e for e in kube.requests_by(grants.user(ns, SA), since=since)]
    assert {e.triple for e in renewals} == {("coordination.k8s.io", "leases", "update")}
    assert 3 <= len(renewals) <= 6, len(renewals)  # every 0.5 s
    assert kube.lease(ns, LEASE)["spec"]["renewTime"] > first
    await a.down(ca)
    await a.close()


async def test_an_ipv6_vip_changes_nothing_the_apiserver_sees_but_the_text(kube, bed,
                                                                          tmp_path):
    """Issue 12: an IPv6 VIP (written uncompressed, no name) everywhere the provider puts
    it: the label key comes from the VIP's name (never the address: label keys and values
    cannot hold ':'), the Lease name and holder identity are the VIP name and the Pod, and
    the address itself only appears in free text (the Lease annotation, Event messages),
    compressed."""
    ns, token = bed
    cfg6 = build_config({"interface": "eth0", "srcip": "fe80::1", "vhid": 9, "pass": "x",
                         "addr": "FD00:0:0:0::0099"})
    a, ca = provider(kube, ns, token, tmp_path, "a", config=cfg6, label_node=True)
    b, cb = provider(kube, ns, token, tmp_path, "b", config=cfg6, label_node=True)
    for p, c in ((a, ca), (b, cb)):
        await p.init()
        await p.down(c)
    await a.pre_master(ca)
    await a.up(ca)
    await a.bow_out(ca)  # a graceful exit gives the Lease up at once
    await a.down(ca)
    await b.pre_master(cb)
    await b.up(cb)
    lease = kube.lease(ns, "vip-sidecar-vhid9")
    assert lease is not None and lease["spec"]["holderIdentity"] == "pod-b"
    assert lease["metadata"]["annotations"]["vip-sidecar.io/vip"] == "vhid9 fd00::99 vhid 9"
    key = "vip-sidecar.io/vhid9"
    assert kube.pod_labels(ns, "pod-b")[key] == "master"
    assert kube.pod_labels(ns, "pod-a")[key] == "backup"
    assert kube.node_labels(f"{ns}-node-b")[key] == "master"
    # Events are sent in the background
    assert await wait_until(
        lambda: sum(e["reason"] == "BecameMaster" for e in kube.events(ns)) == 2, 5)
    became = [e for e in kube.events(ns) if e["reason"] == "BecameMaster"]
    assert all("(fd00::99)" in e["message"] for e in became), became
    for p in (a, b):
        assert all(ok for ok, _ in await p.preflight())
        await p.close()


async def test_events_carry_state_change_reason_and_timings(kube, bed, tmp_path):
    ns, token = bed
    a, ca = provider(kube, ns, token, tmp_path, "a")
    await a.init()
    await a.pre_master(ca)
    await a.up(ca)
    await a.down(ca)
    await a.close()
    events = kube.events(ns)
    master = next(e for e in events if e["reason"] == "BecameMaster")
    pod = kube.get(f"/api/v1/namespaces/{ns}/pods/pod-a")
    involved = master["involvedObject"]
    assert (involved["kind"], involved["name"], involved["namespace"], involved["uid"]) == (
        "Pod", "pod-a", ns, pod["metadata"]["uid"])
    assert "BACKUP -> MASTER (master_down)" in master["message"]
    assert " ms" in master["message"] and "leaseTransitions=0" in master["message"]
    assert master["source"] == {"component": "vip-sidecar", "host": f"{ns}-node-a"}
    backup = [e for e in events if e["reason"] == "BecameBackup"][-1]
    assert "MASTER -> BACKUP after" in backup["message"]


@pytest.mark.parametrize("mode", ["refuse", "hang", "error"])
async def test_outage_failsafe_keeps_for_the_lease_then_steps_down(kube, bed, tmp_path,
                                                                   make_proxy, mode):
    ns, token = bed
    proxy = make_proxy()
    a, ca = provider(kube, ns, token, tmp_path, "a", server=proxy.url, lease_duration=4,
                     renew_interval=1, request_timeout=0.5)
    await a.pre_master(ca)
    await a.up(ca)
    fault = {"refuse": ("refuse", {}), "hang": ("hang", {}),
             "error": ("status", {"code": 500})}[mode]
    proxy.set(fault[0], **fault[1])
    t0 = time.monotonic()
    with pytest.raises(OwnershipLost, match="apiserver_outage=failsafe") as err:
        await run_checks(a, ca, 10.0)
    kept = time.monotonic() - t0
    # 4 s lease minus one decision latency (1.1 s tick + 1 s housekeeping + 0.5 s call)
    assert 4 - 2.6 - 1.0 <= kept <= 4.0, err.value
    t1 = time.monotonic()
    await a.down(ca)  # during the outage: bounded by the request timeout, then retried
    assert time.monotonic() - t1 <= 2 * 0.5 + 0.5
    assert kube.holder(ns, LEASE) == "pod-a"  # the real lease still names us
    proxy.set(None)
    assert await wait_until(lambda: kube.holder(ns, LEASE) is None, 5), \
        "the background retry did not release the lease"
    await a.close()


async def test_a_stopped_apiserver_is_an_outage_and_recovery_is_seen(kube, bed, tmp_path):
    """SIGSTOP the real kube-apiserver: connections are accepted by the kernel but nothing
    answers. failsafe keeps MASTER inside the term, then the renewal after SIGCONT works."""
    ns, token = bed
    a, ca = provider(kube, ns, token, tmp_path, "a", lease_duration=6, renew_interval=1,
                     request_timeout=0.5)
    await a.pre_master(ca)
    await a.up(ca)
    kube.signal("kube-apiserver", signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        await run_checks(a, ca, 2.0)  # within the term: no exception, still MASTER
        assert time.monotonic() - t0 < 4
    finally:
        kube.signal("kube-apiserver", signal.SIGCONT)
    before = kube.lease(ns, LEASE)["spec"]["renewTime"]
    await run_checks(a, ca, 1.6)
    assert kube.lease(ns, LEASE)["spec"]["renewTime"] > before
    await a.down(ca)
    await a.close()


async def test_a_killed_apiserver_costs_the_lease_term_then_recovery(kube, bed, tmp_path):
    """SIGKILL the real kube-apiserver under a MASTER (etcd keeps the data): failsafe steps
    down inside its term, and once a new apiserver process serves, the lease is taken again
    with the state etcd kept (leaseTransitions continues)."""
    ns, token = bed
    a, ca = provider(kube, ns, token, tmp_path, "a", lease_duration=4, renew_interval=1,
                     request_timeout=0.5)
    await a.pre_master(ca)
    await a.up(ca)
    before = kube.lease(ns, LEASE)["spec"]
    kube.kill_apiserver()
    try:
        t0 = time.monotonic()
        with pytest.raises(OwnershipLost, match="apiserver_outage=failsafe"):
            await run_checks(a, ca, 10.0)
        assert time.monotonic() - t0 <= 4.0
        await a.down(ca)  # fails fast: connection refused; retried in the background
    finally:
        started = time.monotonic()
        await asyncio.to_thread(kube.start_apiserver)
        restart_s = time.monotonic() - started
    assert await wait_until(lambda: kube.holder(ns, LEASE) is None, 10)
    await a.pre_master(ca)
    await a.up(ca)
    after = kube.lease(ns, LEASE)["spec"]
    assert after["holderIdentity"] == "pod-a"
    assert after["acquireTime"] != before["acquireTime"]
    print(f"\nkube-apiserver restart took {restart_s:.1f}s")
    await a.down(ca)
    await a.close()


async def test_throttling_5xx_and_resets_during_promotion(kube, bed, tmp_path, make_proxy):
    """Transient trouble while a BACKUP asks for the lease: retried within the promotion's
    budget, honouring Retry-After; only trouble that outlasts the budget refuses, and a
    node never claims what it could not confirm."""
    ns, token = bed
    proxy = make_proxy()
    b, cb = provider(kube, ns, token, tmp_path, "b", server=proxy.url)
    await b.init()
    proxy.set("status", code=429, retry_after=1, count=1)
    t0 = time.monotonic()
    await b.pre_master(cb)
    assert time.monotonic() - t0 >= 1.0  # waited as the apiserver asked
    assert kube.holder(ns, LEASE) == "pod-b"
    await b.down(cb)
    for fault in (("status", {"code": 503, "count": 3}), ("reset", {"count": 2}),
                  ("slow", {"delay": 0.3, "count": 2})):
        proxy.set(fault[0], **fault[1])
        await b.pre_master(cb)
        assert kube.holder(ns, LEASE) == "pod-b", fault
        await b.down(cb)
        assert kube.holder(ns, LEASE) is None
    # an outage longer than the budget: refused, nothing claimed
    proxy.set("status", code=503)
    with pytest.raises(Veto, match="apiserver unreachable"):
        await b.pre_master(cb)
    proxy.set(None)
    assert kube.holder(ns, LEASE) is None
    assert proxy.injected >= 1 + 3 + 2 + 2
    await b.close()


async def test_wrong_token_fails_init_and_vetoes(kube, bed, tmp_path):
    ns, _ = bed
    b, cb = provider(kube, ns, "not-a-token", tmp_path, "b")
    with pytest.raises(Exception, match="401"):
        await b.init()
    with pytest.raises(Veto, match="401"):
        await b.pre_master(cb)
    await b.close()


async def test_a_denied_verb_shows_in_preflight(kube, kube_ns, tmp_path):
    ns = kube_ns
    kube.add_pod(ns, "pod-a")
    token = grants.service_account(kube, ns, "narrow", NAMESPACED_CALLS - {POD_PATCH})
    a, _ = provider(kube, ns, token, tmp_path, "a")
    lines = await a.preflight()
    failed = [text for ok, text in lines if not ok]
    assert len(failed) == 1 and failed[0].startswith("patch pod pod-a (dry run)"), failed
    assert "403" in failed[0] and 'cannot patch resource "pods"' in failed[0]
    assert kube.lease(ns, LEASE) is None  # preflight writes are dry runs
    await a.close()


async def test_in_cluster_service_account_over_tls(kube, bed, tmp_path):
    ns, token = bed
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(token)
    (sa / "ca.crt").write_text(kube.pki.ca_file.read_text())
    (sa / "namespace").write_text(ns)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(kube.port),
           "POD_NAME": "pod-a", "NODE_NAME": "node-a"}  # no POD_NAMESPACE: the SA file
    p = KubernetesProvider(ProviderSpec("kubernetes", {}, 10.0), VIP, CONFIG, environ=env,
                           service_account_dir=str(sa))
    ctx = VipContext(VIP, "node-a")
    since = time.time()
    await p.init()
    assert p.source == "in-cluster service account" and p.namespace == ns
    await p.pre_master(ctx)
    await p.up(ctx)
    assert kube.holder(ns, LEASE) == "pod-a"
    users = {e.user for e in kube.audit() if e.at >= since and e.namespace == ns
             and e.resource in ("leases", "pods")}
    assert grants.user(ns, SA) in users
    await p.down(ctx)
    await p.close()


async def test_kubeconfig_context_namespace_is_used_without_pod_namespace(kube, tmp_path):
    ns = kube.namespace("team")
    kube.add_pod(ns, "pod-a")
    kubeconfig = kube.kubeconfig(tmp_path / "kc", namespace=ns)
    p = KubernetesProvider(ProviderSpec("kubernetes", {"kubeconfig": kubeconfig}, 10.0), VIP,
                           CONFIG, environ={"POD_NAME": "pod-a"})
    await p.init()
    ctx = VipContext(VIP, "x")
    await p.pre_master(ctx)
    assert kube.holder(ns, LEASE) == "pod-a"
    await p.close()
