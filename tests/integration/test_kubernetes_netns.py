"""The Kubernetes provider in real daemons, in network namespaces, against the REAL
kube-apiserver (tests/k8s).

Two hosts run vip-sidecar with providers [kubernetes, alias]. The chart is installed with
the real helm into a fresh namespace; the daemons authenticate with a TokenRequest token of
the chart's ServiceAccount, so the chart's Role is what the real authorizer applies. They
reach the apiserver through tests/k8s/faultproxy.py on the bridge (10.<net>.0.254), which
also makes the outages. Shown here:

* the CARP winner also holds the Lease and carries the master label; after kill -9
  and after SIGTERM the holder and the labels flip and leaseTransitions increments;
* split brain (CARP blocked between the hosts): only the Lease holder has the VIP, the
  other stays BACKUP and says why (log + /status last_failure); without the fence the
  same partition gives both hosts the address;
* apiserver down while MASTER: failsafe keeps the VIP for the lease term then steps
  down, demote steps down at once, a BACKUP refuses to claim without the apiserver.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from testbed.controlplane import ControlPlane
from tests.integration import helmutil
from tests.integration.harness import NETNS, Host, SidecarNode, Topology, wait_for
from tests.k8s.faultproxy import FaultProxy

pytestmark = [NETNS, pytest.mark.netns, pytest.mark.k8s_real]

VIP_NAME = "web"
LEASE = "vip-sidecar-web"
KEY = "vip-sidecar.io/web"
PW = ("-p", "secret", "-v", "21")
SKEW_B = 100  # backup's advskew: the CARP winner is deterministic
CARP_DEAD_B = 3 + SKEW_B / 256  # advbase 1 x deadratio 3 + skew
RELEASE = "vip-sidecar"


@dataclass
class Cluster:
    topo: Topology
    kube: ControlPlane
    proxy: FaultProxy
    ns: str
    kubeconfig: str
    user: str
    nodes: list[SidecarNode] = field(default_factory=list)

    def start(self, i: int, advskew: int, *, kube: dict[str, Any] | None = None,
              fence: bool = True, name: str | None = None) -> SidecarNode:
        host = self.topo.hosts[i]
        opts = {"name": "kubernetes", "kubeconfig": self.kubeconfig, "lease_duration": 4,
                "renew_interval": 1, "request_timeout": 0.5, "label_node": True,
                **(kube or {})}
        providers = ([opts] if fence else []) + [{"name": "alias", "reassert_interval": 1}]
        name = name or f"n{i + 1}-{len(self.topo.procs)}"
        path = self.topo.workdir / f"{name}.json"
        # a short veto backoff cap keeps recovery after an outage inside the test's bounds
        path.write_text(json.dumps({"name": VIP_NAME, "providers": providers,
                                    "provider_hold_max_s": 4}))
        env = {"POD_NAME": f"pod-{i + 1}", "NODE_NAME": self.node(i), "POD_NAMESPACE": self.ns}
        node = self.topo.sidecar(host, *PW, "-a", self.topo.vip(), "-k", str(advskew),
                                 "--config", str(path), name=name, env=env)
        self.nodes.append(node)
        return node

    def node(self, i: int) -> str:
        return f"{self.ns}-node-{i + 1}"

    def holder(self) -> str | None:
        return self.kube.holder(self.ns, LEASE)

    def transitions(self) -> int:
        lease = self.kube.lease(self.ns, LEASE) or {}
        return int(lease.get("spec", {}).get("leaseTransitions") or 0)

    def lease_writes(self) -> list[tuple[float, str | None]]:
        """(server time, holder) of every persisted Lease write (the audit log)."""
        return self.kube.lease_writes(self.ns, LEASE)

    def label(self, i: int) -> str | None:
        return self.kube.pod_labels(self.ns, f"pod-{i + 1}").get(KEY)

    def events(self) -> list[dict[str, Any]]:
        return self.kube.events(self.ns)


@pytest.fixture
def cluster(make_topo, kube, make_proxy):
    topo = make_topo(2)  # the harness allocates a subnet no other test bed uses
    root_ip = topo.attach_root()
    proxy = make_proxy(root_ip)
    ns = kube.namespace("netns")
    admin = kube.kubeconfig(topo.workdir / "admin")
    # the chart's ServiceAccount, Role and ClusterRole, installed by the real helm
    # the same VIP as the daemons' config: the Role names exactly its Lease (resourceNames)
    vips = [{"name": VIP_NAME, "vhid": int(PW[3]), "addr": topo.vip(),
             "providers": [{"name": "kubernetes", "label_node": True}, "alias"]}]
    helmutil.install(admin, ns, set_values={"kubernetes": {"labelNode": True}, "vips": vips},
                     release=RELEASE)
    token = kube.service_account_token(ns, RELEASE)
    for i in (1, 2):
        kube.add_node(f"{ns}-node-{i}")
        kube.add_pod(ns, f"pod-{i}", f"{ns}-node-{i}", {"app": "vip-sidecar"},
                     service_account=RELEASE)
    kubeconfig = kube.kubeconfig(topo.workdir / "kubeconfig", token=token, server=proxy.url)
    yield Cluster(topo, kube, proxy, ns, kubeconfig, f"system:serviceaccount:{ns}:{RELEASE}")


def vip_of(cl: Cluster) -> str:
    return cl.topo.vip()


def has_vip(host: Host, cl: Cluster) -> bool:
    return host.has_address(vip_of(cl))


def up_as_master(cl: Cluster) -> tuple[SidecarNode, SidecarNode]:
    # start the preferred node first: a slow interpreter start of `a` must not let `b`
    # win the first election
    a = cl.start(0, 0)
    wait_for(lambda: a.state() == "MASTER", 20, what="a MASTER")  # includes start-up
    b = cl.start(1, SKEW_B)
    wait_for(lambda: b.state() == "BACKUP", 20, what="b BACKUP")
    wait_for(lambda: cl.holder() == "pod-1", 5, what="pod-1 holds the lease")
    wait_for(lambda: has_vip(cl.topo.hosts[0], cl), 5, what="VIP on host 1")
    wait_for(lambda: cl.label(0) == "master" and cl.label(1) == "backup", 5, what="labels")
    assert b.state() == "BACKUP"
    return a, b


def messages(node: SidecarNode, kind: str) -> list[str]:
    return [e["message"] for e in node.events() if e.get("event") == kind]


def test_carp_winner_holds_the_lease_and_label_and_both_flip_on_failover(cluster):
    cl, (h1, h2) = cluster, cluster.topo.hosts
    a, b = up_as_master(cl)
    time.sleep(0.5)  # let the startup events land
    since = time.time()
    time.sleep(3)
    steady = [r.triple for r in cl.kube.requests_by(cl.user, since=since)]
    # steady state: the master renews (one PUT per ~second), the backup is silent
    assert set(steady) == {("coordination.k8s.io", "leases", "update")}, steady
    assert 1 <= len(steady) <= 4, steady
    assert b.state() == "BACKUP" and not has_vip(h2, cl)
    assert cl.transitions() == 0
    assert cl.kube.pod_labels(cl.ns, "pod-1")["app"] == "vip-sidecar"  # other labels kept

    # crash: kill -9 leaves no chance to release anything
    t0 = time.time()
    a.signal(signal.SIGKILL)
    bound = CARP_DEAD_B + 4 + 0.5 + 1.5  # CARP + a whole lease from b's first look + poll
    took = wait_for(lambda: b.became("MASTER", after=t0), bound, what="b MASTER") - t0
    wait_for(lambda: has_vip(h2, cl), 3, what="VIP on host 2")
    assert cl.holder() == "pod-2" and cl.transitions() == 1
    # the fence held: b's takeover write came a whole lease after a's last renewal (b
    # only trusts what it observed: it first looked when CARP declared a dead)
    renewals = cl.lease_writes()
    last_a = max(at for at, holder in renewals if holder == "pod-1" and at <= t0)
    first_b = min(at for at, holder in renewals if holder == "pod-2")
    assert first_b - last_a >= CARP_DEAD_B + 4 - 1.05, renewals
    # b relabels the dead holder from the Lease's annotations
    wait_for(lambda: cl.label(0) == "backup" and cl.label(1) == "master", 3, what="flip")
    assert any("took over lease" in m for m in messages(b, "k8s_lease_takeover"))

    # a comes back (same pod): BACKUP, its leftover alias removed, no preemption
    a2 = cl.start(0, 0, name="a-restarted")
    wait_for(lambda: a2.state() == "BACKUP" and not has_vip(h1, cl), 10, what="a2 clean")
    time.sleep(2)
    assert a2.became("MASTER") is None and cl.holder() == "pod-2"

    # graceful: SIGTERM bows out, b releases the lease after removing its alias
    t1 = time.time()
    b.signal(signal.SIGTERM)
    handover = wait_for(lambda: a2.became("MASTER", after=t1), 10, what="a2 MASTER") - t1
    assert b.wait(15) == 0
    wait_for(lambda: cl.holder() == "pod-1" and cl.label(0) == "master", 3, what="lease back")
    assert cl.transitions() == 2 and cl.label(1) == "backup"
    assert has_vip(h1, cl) and not has_vip(h2, cl)
    reasons = [e["reason"] for e in cl.events()]
    assert reasons.count("BecameMaster") == 3
    print(f"\nkill -9 -> new master with lease after {took:.2f}s (CARP alone: "
          f"{CARP_DEAD_B:.2f}s); SIGTERM handover {handover:.2f}s")


def test_split_brain_only_the_lease_holder_claims_the_vip(cluster):
    cl, (h1, h2) = cluster, cluster.topo.hosts
    a, b = up_as_master(cl)
    cl.topo.block_carp_between(h1, h2)
    t0 = time.time()
    # b stops hearing a and wants MASTER; watch long enough for several attempts
    while time.time() - t0 < 12:
        assert not has_vip(h2, cl), "the backup claimed the VIP despite the lease"
        assert b.state() == "BACKUP"
        time.sleep(0.2)
    assert b.became("MASTER") is None
    assert a.state() == "MASTER" and has_vip(h1, cl)
    assert cl.holder() == "pod-1" and cl.transitions() == 0
    why = b.vip()["last_failure"]
    assert why.startswith(f"promotion vetoed by kubernetes: lease {cl.ns}/vip-sidecar-web "
                          "is held by pod-1"), why
    vetoes = messages(b, "veto")
    assert len(vetoes) >= 2 and all("held by pod-1" in m for m in vetoes)
    refused = [e for e in cl.events() if e["reason"] == "PromotionRefused"]
    assert refused and refused[0]["involvedObject"]["name"] == "pod-2"


def test_split_brain_without_the_fence_both_claim(cluster):
    """Control: the same partition with only the alias provider is a duplicate VIP."""
    cl, (h1, h2) = cluster, cluster.topo.hosts
    a = cl.start(0, 0, fence=False)
    wait_for(lambda: a.state() == "MASTER" and has_vip(h1, cl), 20, what="a MASTER")
    b = cl.start(1, SKEW_B, fence=False)
    wait_for(lambda: b.state() == "BACKUP", 20, what="b BACKUP")
    cl.topo.block_carp_between(h1, h2)
    wait_for(lambda: b.state() == "MASTER" and has_vip(h2, cl), 10, what="b MASTER too")
    assert has_vip(h1, cl)


def test_apiserver_hang_failsafe_keeps_the_vip_for_the_lease_then_steps_down(cluster):
    cl, (h1, h2) = cluster, cluster.topo.hosts
    # a promotion retries an unreachable apiserver for its budget (timeout - request
    # timeout - 1 s = 6.5 s here) before it refuses
    kube = {"lease_duration": 6, "apiserver_outage": "failsafe", "timeout": 8}
    a = cl.start(0, 0, kube=kube)
    wait_for(lambda: a.state() == "MASTER" and has_vip(h1, cl), 20, what="a MASTER")
    b = cl.start(1, SKEW_B, kube=kube)
    wait_for(lambda: b.state() == "BACKUP", 20, what="b BACKUP")
    wait_for(lambda: cl.holder() == "pod-1", 5, what="lease")
    time.sleep(1.5)  # let a renew: the term then runs from a fresh renewal
    t0 = time.time()
    cl.proxy.set("hang")
    samples = []
    while a.became("BACKUP", after=t0) is None and time.time() - t0 < 12:
        samples.append((time.time() - t0, has_vip(h1, cl), b.state()))
        time.sleep(0.1)
    stepped = a.became("BACKUP", after=t0)
    assert stepped is not None, "failsafe never stepped down"
    # the runtime removes the VIP (down actions) just before it logs the transition
    dropped = next((t for t, v, _ in samples if not v), stepped - t0)
    # the guarantee: the VIP is gone before the lease a wrote last can expire
    last_ok = max(at for at, holder in cl.lease_writes() if holder == "pod-1" and at <= t0)
    assert t0 + dropped <= last_ok + 6, (dropped, last_ok - t0)
    # and it was kept as long as the next check could still decide in time: the last
    # renewal is at most one check period (<= 2.1 s on the 1 s grid) before the outage,
    # the decision latency is 1.1 s tick + 1 s grid + 0.5 s call
    assert dropped >= 6 - 2.6 - 2.1 - 0.2, (dropped, last_ok - t0)
    kept = dropped
    assert all(s == "BACKUP" for _, _, s in samples)
    assert "apiserver_outage=failsafe" in a.vip()["last_failure"]
    # nobody can confirm: b refuses to claim, the VIP is nowhere
    wait_for(lambda: "apiserver unreachable" in (b.vip()["last_failure"] or ""), 10,
             what="b refused")
    wait_for(lambda: not has_vip(h1, cl), 3, what="VIP removed from host 1")
    end = time.time() + 2
    while time.time() < end:
        assert not has_vip(h1, cl) and not has_vip(h2, cl)
        assert "MASTER" not in (a.state(), b.state())
        time.sleep(0.2)
    # the apiserver is back: one node takes the lease and the VIP
    t1 = time.time()
    cl.proxy.set(None)
    wait_for(lambda: "MASTER" in (a.state(), b.state()), 15, what="a master again")
    master, index = (a, 0) if a.state() == "MASTER" else (b, 1)
    wait_for(lambda: cl.holder() == f"pod-{index + 1}", 5, what="holder is the master")
    wait_for(lambda: has_vip(cl.topo.hosts[index], cl), 5, what="VIP back")
    print(f"\nfailsafe kept the VIP {kept:.2f}s of a 6 s lease; recovery after the "
          f"apiserver returned {time.time() - t1:.2f}s ({master.name})")


def test_apiserver_refused_demote_policy_steps_down_at_once(cluster):
    cl, (h1, h2) = cluster, cluster.topo.hosts
    kube = {"lease_duration": 6, "apiserver_outage": "demote"}
    a = cl.start(0, 0, kube=kube)
    wait_for(lambda: a.state() == "MASTER" and has_vip(h1, cl), 20, what="a MASTER")
    b = cl.start(1, SKEW_B, kube=kube)
    wait_for(lambda: b.state() == "BACKUP", 20, what="b BACKUP")
    t0 = time.time()
    cl.proxy.set("refuse")
    stepped = wait_for(lambda: a.became("BACKUP", after=t0), 6, what="a steps down") - t0
    # next renewal (1 s) + the runtime's tick (1 s) + the failing call
    assert stepped <= 1 + 1.1 + 1 + 0.5
    assert "apiserver_outage=demote" in a.vip()["last_failure"]
    wait_for(lambda: not has_vip(h1, cl), 3, what="VIP removed")
    time.sleep(2)
    assert b.state() == "BACKUP" and not has_vip(h2, cl)
    print(f"\ndemote policy stepped down {stepped:.2f}s after the apiserver went away")


@pytest.mark.parametrize("fence", [True, False], ids=["lease", "carp-only"])
def test_kill9_takeover_latency_with_and_without_the_lease(cluster, fence):
    """The price of the fence, measured: the lease confirmation on an uncontested
    promotion, and a crash failover that must wait for the dead holder's term."""
    cl, (h1, h2) = cluster, cluster.topo.hosts
    a = cl.start(0, 0, fence=fence)
    wait_for(lambda: a.state() == "MASTER" and has_vip(h1, cl), 20, what="a MASTER")
    b = cl.start(1, SKEW_B, fence=fence)
    wait_for(lambda: b.state() == "BACKUP", 20, what="b BACKUP")
    first = wait_for(lambda: a.vip()["last_failover"], 3, what="a's failover timeline")
    time.sleep(2)
    t0 = time.time()
    a.signal(signal.SIGKILL)
    took = wait_for(lambda: b.became("MASTER", after=t0), 12, what="b MASTER") - t0
    wait_for(lambda: has_vip(h2, cl), 3, what="VIP on host 2")
    fo = b.vip()["last_failover"]
    print(f"\n[{'lease' if fence else 'carp-only'}] uncontested promotion: detected->elected "
          f"{first['detected_to_elected_s'] * 1000:.1f} ms, ->complete "
          f"{first['detected_to_complete_s'] * 1000:.1f} ms; kill -9 -> MASTER {took:.2f}s "
          f"(detected->elected {fo['detected_to_elected_s']:.2f}s)")
    if fence:
        assert first["detected_to_elected_s"] < 0.5  # one GET + one create, no waiting
        # CARP notices 2.4-3.4 s after the kill (the dead interval runs from a's last
        # advert); then b must see the lease unchanged for a whole 4 s from its first
        # look (it never trusts a's renewTime)
        assert CARP_DEAD_B - 1 + 4 - 0.2 <= took <= CARP_DEAD_B + 4 + 1.5
        assert cl.holder() == "pod-2"
    else:
        assert first["detected_to_elected_s"] < 0.05
        assert took <= CARP_DEAD_B + 0.5
