"""The image, run the way the chart runs it, against the real kube-apiserver.

Two "nodes" (network namespaces on one bridge) each run one container of the image built
from the Dockerfile (buildah), started by podman from the DaemonSet that `helm template`
renders (tests/k8s/podrunner.py plays the kubelet: hostNetwork = the node's namespace,
the container securityContext, the env with its fieldRefs, the ConfigMap, the Secret and
the ServiceAccount token mounted where the in-cluster client looks). The chart is also
`helm install`ed, so the token's ServiceAccount and Role are the chart's own. kill -9 of
the master's container: the other takes the VIP and the Lease.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import pytest

from tests.integration import helmutil
from tests.integration.harness import NETNS, wait_for
from tests.integration.imageutil import RUNROOT, STORAGE
from tests.k8s.podrunner import PodmanEnv, pod_args

pytestmark = [NETNS, pytest.mark.netns, pytest.mark.k8s_real, pytest.mark.buildah,
              pytest.mark.timeout(2400)]

RELEASE = "vip-sidecar"
VHID = 61


@contextlib.contextmanager
def explained(podman: PodmanEnv, name: str) -> Iterator[None]:
    """A timed-out wait says what the container logged."""
    try:
        yield
    except AssertionError as exc:
        logs = podman.run("logs", name, check=False)
        raise AssertionError(f"{exc}\n--- {name} logs:\n{(logs.stdout + logs.stderr)[-3000:]}"
                             ) from None


@pytest.mark.parametrize("non_root", [False, True], ids=["root-2-caps", "non-root"])
def test_two_pods_of_the_image_fail_over_with_the_lease(built_image, make_topo, kube,
                                                        make_proxy, tmp_path, non_root):
    topo = make_topo(2)
    root_ip = topo.attach_root()
    proxy = make_proxy(root_ip)
    ns = kube.namespace("img")
    vip = topo.vip()
    values = {
        "image": {"repository": built_image.rsplit(":", 1)[0],
                  "tag": built_image.rsplit(":", 1)[1], "pullPolicy": "Never"},
        "config": {"interface": "eth0", "advbase": 1, "preempt": False},
        "vips": [{"name": "web", "vhid": VHID, "addr": vip,
                  "providers": [{"name": "kubernetes", "lease_duration": 4,
                                 "renew_interval": 1, "request_timeout": 1},
                                {"name": "alias", "prefix": 24}]}],
        "security": {"nonRoot": non_root},
        "password": "img-pass",
    }
    admin = kube.kubeconfig(tmp_path / "admin")
    helmutil.install(admin, ns, set_values=values, release=RELEASE)
    manifests = helmutil.render_chart(set_values=values, namespace=ns, release=RELEASE)
    token = kube.service_account_token(ns, RELEASE)
    podman = PodmanEnv(STORAGE, RUNROOT)
    names: list[str] = []
    try:
        for i, host in enumerate(topo.hosts):
            pod = f"{RELEASE}-{i}"
            node = f"{ns}-node-{i}"
            kube.add_node(node)
            kube.add_pod(ns, pod, node, {"app": "vip-sidecar"}, service_account=RELEASE)
            opts, command = pod_args(
                manifests, netns=host.ns, host_ip=host.ip, node=node, pod=pod, namespace=ns,
                files=tmp_path / pod, api=(root_ip, proxy.port), token=token,
                ca=kube.pki.ca_file.read_text())
            name = f"vip-{uuid.uuid4().hex[:10]}"
            names.append(name)
            podman.run("run", "--detach", "--name", name, "--log-driver", "k8s-file",
                       *opts, built_image, *command)
            if i == 0:  # the first pod becomes master before the second starts
                with explained(podman, name):
                    wait_for(lambda: kube.holder(ns, "vip-sidecar-web") == f"{RELEASE}-0", 60,
                             what="pod 0 holds the lease")
        h0, h1 = topo.hosts
        wait_for(lambda: h0.has_address(vip), 10, what="VIP on node 0")
        time.sleep(3)  # node 1 up and BACKUP
        assert not h1.has_address(vip)
        state = podman.run("inspect", "--format", "{{.State.Running}}", names[1]).stdout
        assert state.strip() == "true", podman.run("logs", names[1], check=False).stderr
        # the container really runs with only the chart's capabilities
        caps = podman.run("inspect", "--format", "{{.EffectiveCaps}}", names[0]).stdout
        assert set(caps.strip("[]\n").split()) == {"CAP_NET_ADMIN", "CAP_NET_RAW"}, caps

        t0 = time.time()
        podman.run("kill", "--signal", "KILL", names[0])
        with explained(podman, names[1]):
            wait_for(lambda: h1.has_address(vip), 20, what="VIP on node 1")
        took = time.time() - t0
        wait_for(lambda: kube.holder(ns, "vip-sidecar-web") == f"{RELEASE}-1", 5,
                 what="pod 1 holds the lease")
        labels = kube.pod_labels(ns, f"{RELEASE}-1")
        assert labels.get("vip-sidecar.io/web") == "master", labels
        logs = podman.run("logs", names[1], check=False)
        assert "Traceback" not in logs.stdout + logs.stderr
        print(f"\n[image {'non-root' if non_root else 'root+2 caps'}] kill -9 of the master "
              f"container -> VIP + lease on the other node after {took:.2f}s")
    finally:
        for name in names:
            podman.run("rm", "--force", "--time", "2", name, check=False)
