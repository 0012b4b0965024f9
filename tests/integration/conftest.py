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
