"""The `--kubernetes` part of the chaos bed: a real etcd + kube-apiserver (built by
tests/k8s/build.sh, started by testbed/controlplane.py) on the bed's root leg, every node's
kubernetes provider holding the VIP's Lease (the fence), and the apiserver faults.

The daemons talk to the apiserver directly (no proxy in between): the apiserver listens
on 10.<net>.0.254, the bridge address of the process running the bed, so a node whose
link is down or which is partitioned loses the API exactly when it loses its link. They
authenticate as the admin (RBAC is tests/integration/test_helm_release.py's subject, not
this one's); each node is a Pod `pod-<node>` on a Node `<ns>-<node>`, as the chart's
downward API would describe it.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable
from typing import Any

from testbed.controlplane import ControlPlane, binaries
from testbed.harness import SidecarNode, Topology, wait_for

# the provider's timing, as in tests/integration/test_kubernetes_netns.py: a 4-s lease
# renewed every second, API calls bounded at 0.5 s
LEASE_DURATION_S = 4
PROVIDER = {"lease_duration": LEASE_DURATION_S, "renew_interval": 1, "request_timeout": 0.5}
# the veto backoff cap: a backup refused the Lease retries after at most this long (the
# default, 60 s, is for production, where nobody measures a recovery deadline)
HOLD_MAX_S = 4.0
# what a fenced take-over may add to CARP's dead interval (checker.Params.fence_s): a
# backup takes a Lease only after seeing it unchanged for a whole lease term (plus two
# polls), and it may be in a veto backoff when the term ends
FENCE_S = LEASE_DURATION_S + 2 * 0.5 + HOLD_MAX_S


class KubeBed:
    def __init__(self, topo: Topology, nodes: Iterable[str], log: Callable[[str], None]) -> None:
        self.log = log
        host = topo.attach_root()
        self.cp = ControlPlane(binaries(), host=host)
        try:
            self.cp.start()
            self.ns = self.cp.namespace("chaos")
            for name in nodes:
                self.cp.add_node(self.node_name(name))
                self.cp.add_pod(self.ns, self.pod_name(name), self.node_name(name))
            self.kubeconfig = self.cp.kubeconfig(topo.workdir / "kubeconfig", namespace=self.ns)
        except BaseException:
            self.cp.stop()
            raise
        log(f"kubernetes: apiserver {self.cp.url}, namespace {self.ns}")

    def node_name(self, name: str) -> str:
        return f"{self.ns}-{name}"

    def pod_name(self, name: str) -> str:
        return f"pod-{name}"

    def provider(self) -> dict[str, Any]:
        return {"name": "kubernetes", "kubeconfig": self.kubeconfig, **PROVIDER}

    def env(self, name: str) -> dict[str, str]:
        """The downward API's variables for the node's daemon."""
        return {
            "POD_NAME": self.pod_name(name),
            "NODE_NAME": self.node_name(name),
            "POD_NAMESPACE": self.ns,
        }

    def holder(self, lease: str) -> str | None:
        with contextlib.suppress(Exception):
            return self.cp.holder(self.ns, lease)
        return None

    # -- the apiserver faults ------------------------------------------------------------
    def begin(self, kind: str) -> None:
        if kind == "apistop":
            self.cp.signal("kube-apiserver", signal.SIGSTOP)
        elif kind == "apikill":
            self.cp.kill_apiserver()
        else:
            raise ValueError(f"not an apiserver fault: {kind}")

    def finish(self, kind: str) -> None:
        """Heal; returns once the apiserver answers /readyz again (a restart is part of
        the outage: the fault's end is when the API is back)."""
        if kind == "apistop":
            self.cp.signal("kube-apiserver", signal.SIGCONT)
            wait_for(self.cp.ready, 60, 0.2, "kube-apiserver /readyz after SIGCONT")
        elif kind == "apikill":
            self.cp.start_apiserver()  # waits for /readyz

    def stop(self) -> None:
        self.cp.stop()


def daemonless(
    faults: Iterable[Any], procs: dict[str, SidecarNode | None]
) -> list[tuple[str, float, float]]:
    """(node, from, to) for each kill -9: from the kill until the restarted daemon's first
    logged transition (its start-up clean-up has run by then). Every incarnation of a node
    appends to one log, so any of its SidecarNode objects reads them all."""
    out = []
    for f in faults:
        proc = procs.get(f.node)
        if f.kind != "kill9" or proc is None:
            continue
        first = [ts for ts, _, _ in proc.transitions() if ts >= f.end]
        # no logged start: the excuse ends with the fault, (b) and (d) judge the rest
        out.append((f.node, f.start, min(first) if first else f.end))
    return out
