from collections.abc import Callable, Iterator

import pytest

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
