"""Issue 18 against the REAL kube-apiserver (tests/k8s): the fence with skewed node
clocks, the chart's ValidatingAdmissionPolicy enforced by the apiserver, and promotions
and renewals through API trouble (tests/k8s/faultproxy.py).

Every node's wall clock is injected (the provider's `wall`), ±30 s apart; only the
renewTime the holders stamp on the real Lease shows it. Monotonic time is real.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration import helmutil
from tests.integration.test_kubernetes_api import (  # the real-apiserver bed and helpers
    LEASE,
    SA,
    provider,
    run_checks,
)
from tests.k8s import grants
from vip_sidecar.providers.base import Timing, Veto
from vip_sidecar.providers.kubernetes import LeaseLost
from vip_sidecar.providers.kubernetes.lease import parse_time

pytestmark = pytest.mark.k8s_real
#: what the runtime tells a provider ticking every second (tick + 10 % jitter + 1 s grid)
RUNTIME = Timing(check_within_s=2.1, grid_s=1.0)
FAST = {"lease_duration": 4, "renew_interval": 1, "request_timeout": 0.5}


@pytest.fixture
def two_pods(kube, kube_ns) -> tuple[str, str]:
    """Pods a and b on their own Nodes, and a token allowed exactly the call table."""
    for n in "ab":
        kube.add_node(f"{kube_ns}-node-{n}")
        kube.add_pod(kube_ns, f"pod-{n}", f"{kube_ns}-node-{n}")
    return kube_ns, grants.service_account(kube, kube_ns, SA)


def skewed(seconds: float):
    return lambda: datetime.now(UTC) + timedelta(seconds=seconds)


# ------------------------------------------------------------------ clock skew
@pytest.mark.k8s_skew
@pytest.mark.parametrize("skew", [30.0, -30.0])
async def test_a_backup_skewed_30s_never_takes_a_live_lease(kube, two_pods, tmp_path, skew):
    """Split brain (CARP blocked) with the backup's clock 30 s ahead of (or behind) the
    master's: every promotion it tries is refused while the master renews."""
    ns, token = two_pods
    a, ca = provider(kube, ns, token, tmp_path, "a", wall=skewed(-skew), **FAST)
    b, cb = provider(kube, ns, token, tmp_path, "b", wall=skewed(skew), acquire_wait=0,
                     **FAST)
    await a.pre_master(ca)
    await a.up(ca)
    renewer = asyncio.ensure_future(run_checks(a, ca, 9.0))
    refused = 0
    while not renewer.done():
        with pytest.raises(Veto, match="held by pod-a"):
            await b.pre_master(cb)
        refused += 1
        assert kube.holder(ns, LEASE) == "pod-a"
        await asyncio.sleep(0.5)
    await renewer
    # the skew is real: a stamps renewTime 30 s off the apiserver's clock
    stamp = parse_time(kube.lease(ns, LEASE)["spec"]["renewTime"])
    assert stamp is not None
    assert abs((stamp - datetime.now(UTC)).total_seconds() + skew) < 3
    b_user = grants.user(ns, SA)
    writes = [w for w in kube.lease_writes(ns, LEASE) if w[1] == "pod-b"]
    assert refused >= 10 and writes == [], (b_user, writes)
    for p in (a, b):
        await p.close()


@pytest.mark.k8s_skew
@pytest.mark.parametrize("skew", [30.0, -30.0])
async def test_in_an_outage_the_master_steps_down_before_a_skewed_backup_can_take(
        kube, two_pods, tmp_path, make_proxy, skew):
    """a reaches the apiserver only through the proxy, which then hangs; b reaches it
    directly and asks for the lease every 0.2 s. docs/kubernetes.md: a has decided to
    step down before its term (last successful renewal + 4 s) ends, by up to one decision
    latency (1.1 x 1 s tick + 1 s grid + 0.5 s call = 2.6 s) depending on the check
    phase, and b cannot take the lease before that term ends. Measured: ~1.0 s."""
    ns, token = two_pods
    proxy = make_proxy()
    a, ca = provider(kube, ns, token, tmp_path, "a", server=proxy.url, wall=skewed(-skew),
                     **FAST)
    b, cb = provider(kube, ns, token, tmp_path, "b", wall=skewed(skew), acquire_wait=0,
                     **FAST)
    ca.timing = RUNTIME
    await a.pre_master(ca)
    await a.up(ca)
    await run_checks(a, ca, 2.5)
    last_ok = a.holder.valid_until - 4  # start of a's last successful renewal
    proxy.set("hang")  # every request of a's hangs until its 0.5 s timeout
    a_down: list[float] = []

    async def master() -> None:
        try:
            await run_checks(a, ca, 20.0)
        except LeaseLost:
            a_down.append(time.monotonic())

    task = asyncio.ensure_future(master())
    b_take = None
    end = time.monotonic() + 20
    while b_take is None and time.monotonic() < end:
        try:
            await b.pre_master(cb)
            b_take = time.monotonic()
        except Veto:
            await asyncio.sleep(0.2)
    await task
    proxy.set(None)
    assert a_down and b_take is not None
    margin = b_take - a_down[0]
    print(f"\nskew {skew:+.0f}s: master stepped down {margin:.2f}s before the backup "
          "took the lease")
    assert a_down[0] < last_ok + 4 <= b_take  # a inside its term, b after it
    assert margin > 0.25, margin
    assert kube.holder(ns, LEASE) == "pod-b"
    for p in (a, b):
        await p.close()


# ------------------------------------------------------------------ API trouble
@pytest.mark.parametrize(("fault", "kw", "least_s"), [
    ("status", {"code": 429, "retry_after": 2, "count": 1}, 2.0),
    ("status", {"code": 503, "count": 4}, 0.25 + 0.5 + 1.0),
    ("status", {"code": 500, "count": 2, "match": "/leases"}, 0.25),
    ("reset", {"count": 3}, 0.25),
], ids=["429-retry-after", "503-burst", "500-on-the-write", "resets"])
async def test_a_promotion_rides_out_api_trouble_within_its_budget(kube, two_pods, tmp_path,
                                                                    make_proxy, fault, kw,
                                                                    least_s):
    ns, token = two_pods
    proxy = make_proxy()
    b, cb = provider(kube, ns, token, tmp_path, "b", server=proxy.url)
    await b.init()
    proxy.set(fault, **kw)
    t0 = time.monotonic()
    await b.pre_master(cb)  # no veto: retried until the API answered
    took = time.monotonic() - t0
    await b.up(cb)
    assert kube.holder(ns, LEASE) == "pod-b" and proxy.injected >= kw["count"]
    assert least_s <= took <= b.opts.acquire_budget, took
    assert b.holder.retries >= 1
    print(f"\n{fault} {kw}: promotion took {took:.2f}s, {b.holder.retries} retries")
    await b.down(cb)
    await b.close()


async def test_a_promotion_refuses_once_the_budget_is_spent(kube, two_pods, tmp_path, make_proxy):
    ns, token = two_pods
    proxy = make_proxy()
    b, cb = provider(kube, ns, token, tmp_path, "b", server=proxy.url)
    await b.init()
    proxy.set("status", code=503)
    t0 = time.monotonic()
    with pytest.raises(Veto, match="apiserver unreachable"):
        await b.pre_master(cb)
    assert b.opts.acquire_budget - 3.5 <= time.monotonic() - t0 <= b.opts.acquire_budget + 1
    proxy.set(None)
    assert kube.holder(ns, LEASE) is None
    await b.close()


@pytest.mark.parametrize(("kw", "most"), [
    ({"code": 503}, 4),  # 4 s at renew_interval 1 s: one attempt per second, not per tick
    ({"code": 429, "retry_after": 3}, 2),  # Retry-After 3 s: at most two attempts in 4 s
], ids=["503", "429-retry-after"])
async def test_renewals_back_off_while_the_api_fails(kube, two_pods, tmp_path, make_proxy, kw,
                                                     most):
    ns, token = two_pods
    proxy = make_proxy()
    a, ca = provider(kube, ns, token, tmp_path, "a", server=proxy.url, lease_duration=10,
                     renew_interval=1, request_timeout=0.5)
    ca.timing = RUNTIME
    a.tick_s = a.reassert_interval = 0.25  # the runtime may tick faster than it renews
    await a.pre_master(ca)
    await a.up(ca)
    proxy.set("status", match="/leases", **kw)
    before = proxy.injected
    await run_checks(a, ca, 4.0)  # failsafe: inside the 10 s term, still MASTER
    attempts = proxy.injected - before
    assert 1 <= attempts <= most, attempts
    proxy.set(None)
    await run_checks(a, ca, 3.5)
    assert a.holder.outage_since is None  # renewed again
    await a.down(ca)
    await a.close()


# ------------------------------------------------------------------ admission policy
def chart_install(kube, ns: str, tmp_path) -> tuple[str, str]:
    """The chart installed (kubernetes example, labelNode) into ns; its SA and token."""
    kubeconfig = kube.kubeconfig(tmp_path / "admin")
    release = helmutil.install(kubeconfig, ns, ["examples/values-kubernetes.yaml"])
    import yaml

    docs = [d for d in yaml.safe_load_all(release["manifest"]) if d]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    kinds = {d["kind"] for d in docs}
    assert {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} <= kinds
    return sa, kube.service_account_token(ns, sa)


async def wait_policy(kube, ns: str, token: str, pod: str) -> None:
    """The apiserver compiles a new policy asynchronously: wait until it refuses."""
    end = time.monotonic() + 15
    while time.monotonic() < end:
        status, _ = kube.request(
            "PATCH", f"/api/v1/namespaces/{ns}/pods/{pod}",
            {"metadata": {"labels": {"app": "probe"}}}, token=token, ok=(),
            content_type="application/merge-patch+json", query={"dryRun": "All"})
        if status in (403, 422):
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the admission policy never took effect")


async def test_the_admission_policy_is_enforced_by_the_real_apiserver(kube, kube_ns, tmp_path):
    ns = kube_ns
    node = f"{ns}-node-a"
    kube.add_node(node, {"zone": "a"})
    kube.add_pod(ns, "pod-a", node, {"app": "vip-sidecar"})
    sa, token = chart_install(kube, ns, tmp_path)
    await wait_policy(kube, ns, token, "pod-a")

    def patch(path: str, body, token=token) -> tuple[int, dict]:
        kind = "json-patch" if isinstance(body, list) else "merge-patch"
        return kube.request("PATCH", path, body, token=token, ok=(),
                            content_type=f"application/{kind}+json")

    pod_path, node_path = f"/api/v1/namespaces/{ns}/pods/pod-a", f"/api/v1/nodes/{node}"
    key = "vip-sidecar.io/ingress"
    for path in (pod_path, node_path):  # its own label: allowed
        status, _ = patch(path, {"metadata": {"labels": {key: "master"}}})
        assert status == 200
    assert kube.pod_labels(ns, "pod-a")[key] == "master"
    assert kube.node_labels(node)[key] == "master"
    # a JSON patch of the one mutable field: pod validation itself would allow it
    image = [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil:latest"}]
    refused = [
        (pod_path, image),
        (node_path, {"spec": {"taints": [{"key": "x", "effect": "NoSchedule"}]}}),
        (node_path, {"spec": {"unschedulable": True}}),
        (pod_path, {"metadata": {"labels": {"app": "hijacked"}}}),
        (pod_path, {"metadata": {"annotations": {"a": "b"}}}),
    ]
    codes = []
    for path, body in refused:
        status, doc = patch(path, body)
        assert status in (403, 422), (body, status, doc)
        assert "ValidatingAdmissionPolicy" in doc.get("message", ""), doc
        codes.append((status, doc.get("reason")))
    print(f"\nrefused by the policy: {codes}")
    pod = kube.get(pod_path)
    assert pod["spec"]["containers"][0]["image"] == "vip-sidecar:test"
    node_spec = kube.get(node_path)["spec"]
    assert not node_spec.get("unschedulable")
    assert "x" not in {t["key"] for t in node_spec.get("taints", [])}
    # the same image patch by the admin goes through: the policy, not validation, refused
    status, _ = patch(pod_path, image, token=kube.admin_token)
    assert status == 200
    # RBAC: get/update only on the chart's Lease names
    lease = "/apis/coordination.k8s.io/v1/namespaces/{}/leases/{}"
    assert kube.request("GET", lease.format(ns, "vip-ingress"), token=token, ok=())[0] == 404
    assert kube.request("GET", lease.format(ns, "other"), token=token, ok=())[0] == 403
    # and the provider itself, with the chart's token, does everything it needs
    t0 = time.time()
    a, ca = provider(kube, ns, token, tmp_path, "a", lease_name="vip-ingress",
                     label_node=True)
    a.opts = replace(a.opts, node_name=node, label_key=key)
    a.publisher.opts = a.holder.opts = a.opts
    await a.init()
    await a.down(ca)
    await a.pre_master(ca)
    await a.up(ca)
    await run_checks(a, ca, 1.2)
    await a.down(ca)  # MASTER -> BACKUP
    await a.down(ca)  # BACKUP -> BACKUP
    await a.down(ca)  # the same Event again: a count patch
    await a.close()
    assert kube.holder(ns, "vip-ingress") is None
    assert kube.pod_labels(ns, "pod-a")[key] == "backup"
    assert kube.node_labels(node)[key] == "backup"
    mine = kube.requests_by(grants.user(ns, sa), since=t0)
    assert mine and not [(e.triple, e.code) for e in mine if e.code in (401, 403, 422)]
    assert ("", "events", "patch") in {e.triple for e in mine}
