"""The Kubernetes provider with the real `kubernetes` client over HTTP(S), in-process.

The apiserver is tests/k8sfake (a TEST DOUBLE: no kube-apiserver can be installed on
these machines). The provider is configured exactly as in production: a kubeconfig
file, or the in-cluster service account (KUBERNETES_SERVICE_HOST + token + CA over
TLS). The fake is strict where a real apiserver is (MicroTime format, resourceVersion
conflicts, label syntax, merge-patch content type), so these tests catch what the
client really puts on the wire. No root needed; real clocks with short leases.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from providers.base import OwnershipLost, Veto, VipContext
from providers.kubernetes import KubernetesProvider
from providers.kubernetes.api import API_CALLS, rbac_triples
from sidecar.config import ProviderSpec, build_config
from tests.k8sfake import FakeApiServer, self_signed_cert

NS = "vip-system"
CONFIG = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 9, "pass": "x",
                       "addr": "10.0.0.99", "name": "ingress"})
VIP = CONFIG.vips[0]
LEASE = "vip-sidecar-ingress"
KEY = "vip-sidecar.io/ingress"


@pytest.fixture
def apiserver():
    srv = FakeApiServer().start()
    for n in "ab":
        srv.add_pod(NS, f"pod-{n}", f"node-{n}", {"app": "vip-sidecar"})
        srv.add_node(f"node-{n}", {"kubernetes.io/hostname": f"node-{n}"})
    yield srv
    srv.stop()


def provider(srv: FakeApiServer, tmp: Path, n: str, **opts) -> tuple[KubernetesProvider,
                                                                        VipContext]:
    kubeconfig = srv.kubeconfig(tmp / f"kubeconfig-{n}")
    options = {"kubeconfig": kubeconfig, "lease_duration": 2, "renew_interval": 0.5,
               "request_timeout": 0.5, **opts}
    env = {"POD_NAME": f"pod-{n}", "NODE_NAME": f"node-{n}", "POD_NAMESPACE": NS}
    p = KubernetesProvider(ProviderSpec("kubernetes", options, 10.0), VIP, CONFIG, environ=env)
    return p, VipContext(VIP, f"node-{n}", reason="master_down")


async def run_checks(p: KubernetesProvider, ctx: VipContext, seconds: float) -> None:
    """What the runtime does while MASTER: check() every reassert_interval."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        await asyncio.sleep(p.reassert_interval)
        await p.check(ctx)


async def test_full_cycle_over_http_uses_exactly_the_declared_calls(apiserver, tmp_path):
    a, ca = provider(apiserver, tmp_path, "a", label_node=True)
    b, cb = provider(apiserver, tmp_path, "b", label_node=True)
    for p, c in ((a, ca), (b, cb)):
        await p.init()
        await p.down(c)
    await a.pre_master(ca)
    await a.up(ca)
    assert apiserver.holder(NS, LEASE) == "pod-a"
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
    lease = apiserver.lease(NS, LEASE)["spec"]
    assert lease["holderIdentity"] == "pod-b" and lease["leaseTransitions"] == 1
    assert apiserver.pod_labels(NS, "pod-a")[KEY] == "backup"
    assert apiserver.pod_labels(NS, "pod-b")[KEY] == "master"
    assert apiserver.node_labels("node-b")[KEY] == "master"
    assert apiserver.pod_labels(NS, "pod-a")["app"] == "vip-sidecar"  # merge, not replace
    await b.down(cb)
    assert apiserver.holder(NS, LEASE) is None
    await b.down(cb)  # BACKUP -> BACKUP twice: the repeat is a count patch of one Event
    await b.down(cb)
    for p in (a, b):
        await p.preflight()
        await p.close()
    # every request the fake saw needs exactly the RBAC the provider declares
    assert apiserver.unexpected == []
    assert apiserver.triples() == rbac_triples(API_CALLS)
    assert {r.content_type for r in apiserver.requests if r.verb == "patch"} == {
        "application/merge-patch+json"}
    reasons = [e["reason"] for e in apiserver.events(NS)]
    assert reasons.count("BecameMaster") == 2 and "PromotionRefused" in reasons


async def test_events_carry_state_change_reason_and_timings(apiserver, tmp_path):
    a, ca = provider(apiserver, tmp_path, "a")
    await a.init()
    await a.pre_master(ca)
    await a.up(ca)
    await a.down(ca)
    await a.close()
    events = apiserver.events(NS)
    master = next(e for e in events if e["reason"] == "BecameMaster")
    assert master["involvedObject"] == {
        "apiVersion": "v1", "kind": "Pod", "name": "pod-a", "namespace": NS,
        "uid": apiserver.store.peek("", "pods", NS, "pod-a")["metadata"]["uid"]}
    assert "BACKUP -> MASTER (master_down)" in master["message"]
    assert " ms" in master["message"] and "leaseTransitions=0" in master["message"]
    assert master["source"] == {"component": "vip-sidecar", "host": "node-a"}
    backup = [e for e in events if e["reason"] == "BecameBackup"][-1]
    assert "MASTER -> BACKUP after" in backup["message"]


@pytest.mark.parametrize("mode", ["refuse", "hang", "error"])
async def test_outage_modes_failsafe_keeps_for_the_lease_then_steps_down(apiserver, tmp_path,
                                                                         mode):
    a, ca = provider(apiserver, tmp_path, "a", lease_duration=4, renew_interval=1,
                     request_timeout=0.5)
    await a.pre_master(ca)
    await a.up(ca)
    apiserver.set_outage(mode)
    t0 = time.monotonic()
    with pytest.raises(OwnershipLost, match="apiserver_outage=failsafe") as err:
        await run_checks(a, ca, 10.0)
    kept = time.monotonic() - t0
    # 4 s lease minus one decision latency (1.1 s tick + 1 s housekeeping + 0.5 s call)
    assert 4 - 2.6 - 1.0 <= kept <= 4.0, err.value
    t1 = time.monotonic()
    await a.down(ca)  # during the outage: bounded by the request timeout, then retried
    assert time.monotonic() - t1 <= 2 * 0.5 + 0.5
    apiserver.set_outage(None)
    for _ in range(100):
        if apiserver.holder(NS, LEASE) is None:
            break
        await asyncio.sleep(0.05)
    assert apiserver.holder(NS, LEASE) is None  # the background retry released it
    await a.close()


async def test_backup_cannot_confirm_during_an_outage(apiserver, tmp_path):
    b, cb = provider(apiserver, tmp_path, "b")
    await b.init()
    apiserver.set_outage("refuse")
    with pytest.raises(Veto, match="apiserver unreachable"):
        await b.pre_master(cb)
    apiserver.set_outage(None)
    await b.pre_master(cb)
    await b.close()


async def test_wrong_token_fails_init_and_vetoes(apiserver, tmp_path):
    apiserver.tokens = {"other": "someone"}
    b, cb = provider(apiserver, tmp_path, "b")
    with pytest.raises(Exception, match="401"):
        await b.init()
    with pytest.raises(Veto, match="401"):
        await b.pre_master(cb)
    await b.close()


async def test_a_denied_verb_shows_in_preflight(apiserver, tmp_path):
    apiserver.deny.add(("", "pods", "patch"))
    a, _ = provider(apiserver, tmp_path, "a")
    lines = await a.preflight()
    failed = [text for ok, text in lines if not ok]
    assert len(failed) == 1 and failed[0].startswith("patch pod pod-a (dry run)")
    assert "403" in failed[0] and 'cannot patch resource "pods"' in failed[0]
    assert apiserver.store.peek("coordination.k8s.io", "leases", NS, LEASE) is None
    await a.close()


async def test_in_cluster_service_account_over_tls(tmp_path):
    pytest.importorskip("cryptography")
    cert, key = self_signed_cert(tmp_path)
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("sa-token")
    (sa / "ca.crt").write_text(Path(cert).read_text())
    (sa / "namespace").write_text(NS)
    srv = FakeApiServer(tokens={"sa-token": "system:serviceaccount:vip-system:vip"},
                        tls=(cert, key)).start()
    try:
        srv.add_pod(NS, "pod-a", "node-a")
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(srv.port),
               "POD_NAME": "pod-a", "NODE_NAME": "node-a"}  # no POD_NAMESPACE: the SA file
        p = KubernetesProvider(ProviderSpec("kubernetes", {}, 10.0), VIP, CONFIG, environ=env,
                               service_account_dir=str(sa))
        ctx = VipContext(VIP, "node-a")
        await p.init()
        assert p.source == "in-cluster service account" and p.namespace == NS
        await p.pre_master(ctx)
        await p.up(ctx)
        assert srv.holder(NS, LEASE) == "pod-a"
        assert {r.user for r in srv.requests} == {"system:serviceaccount:vip-system:vip"}
        await p.close()
    finally:
        srv.stop()


async def test_kubeconfig_context_namespace_is_used_without_pod_namespace(apiserver, tmp_path):
    kubeconfig = apiserver.kubeconfig(tmp_path / "kc", namespace="team-x")
    apiserver.add_pod("team-x", "pod-a")
    p = KubernetesProvider(ProviderSpec("kubernetes", {"kubeconfig": kubeconfig}, 10.0), VIP,
                           CONFIG, environ={"POD_NAME": "pod-a"})
    await p.init()
    ctx = VipContext(VIP, "x")
    await p.pre_master(ctx)
    assert apiserver.holder("team-x", LEASE) == "pod-a"
    await p.close()
