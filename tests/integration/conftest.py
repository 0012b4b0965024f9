from collections.abc import Callable, Iterator

import pytest

from tests.awsfakes.bed import make_bed
from tests.integration.harness import Topology


@pytest.fixture
def make_topo() -> Iterator[Callable[..., Topology]]:
    made: list[Topology] = []

    def factory(n: int, **kw) -> Topology:
        topo = Topology(n, **kw)
        made.append(topo)
        return topo

    yield factory
    for topo in made:
        topo.close()


@pytest.fixture
def make_aws_bed(make_topo, monkeypatch):
    """Namespaces + moto (behind the fault wrapper) + the token-checking fake IMDS."""
    for var in (
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_EC2",
    ):
        # the region must come from IMDS, not from the environment
        monkeypatch.delenv(var, raising=False)
    beds = []

    def factory(**kw):
        bed = make_bed(make_topo, **kw)
        beds.append(bed)
        return bed

    yield factory
    for bed in beds:
        bed.moto.stop()
        bed.imds.stop()


# ------------------------------------------------------------------ real Kubernetes
@pytest.fixture(scope="session")
def kube():
    """etcd + kube-apiserver (built from Go modules by tests/k8s/build.sh), one per session.
    A build or start failure is an error, never a skip: CI must not pass without them."""
    from testbed.controlplane import ControlPlane, binaries

    cp = ControlPlane(binaries()).start()
    yield cp
    cp.stop()


@pytest.fixture
def kube_ns(kube) -> str:
    """A fresh namespace (with its `default` ServiceAccount) per test: no garbage
    collector runs, so tests never share objects."""
    return kube.namespace()


@pytest.fixture
def make_proxy(kube):
    """Fault-injecting HTTPS proxies in front of the real apiserver."""
    from tests.k8s.faultproxy import FaultProxy

    made = []

    def factory(host: str = "127.0.0.1"):
        cert = kube.pki.issue(f"proxy-{host}", ips=[host])
        proxy = FaultProxy(kube.url, kube.pki.ca_file, cert, host).start()
        made.append(proxy)
        return proxy

    yield factory
    for proxy in made:
        proxy.stop()


@pytest.fixture(scope="session")
def built_image():
    """The real Dockerfile built with buildah on the debootstrap base, once per session."""
    from tests.integration.imageutil import built_image as build

    with build() as tag:
        yield tag
