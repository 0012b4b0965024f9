"""A provider from another distribution: docs/examples/statefile-provider is installed
with pip (into a directory of its own), registers through the `vip_sidecar.providers`
entry-point group, and follows a real failover in network namespaces."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.harness import NETNS, REPO, wait_for

pytestmark = [NETNS, pytest.mark.netns]

EXAMPLE = REPO / "docs" / "examples" / "statefile-provider"
PW = ("-p", "secret", "-v", "21")


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("plugin-site")
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
         str(EXAMPLE)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return site


def read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def test_the_registry_lists_the_installed_entry_point(plugin_site):
    code = (
        "from vip_sidecar.providers import registry; print(registry.known_names()); "
        "print(registry.resolve('statefile').__module__)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(plugin_site)])}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.splitlines()
    assert "statefile" in out[0] and "alias" in out[0]
    assert out[1] == "vip_sidecar_statefile"


def test_an_entry_point_provider_follows_a_failover(make_topo, plugin_site):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), str(plugin_site)])}
    nodes, files = [], []
    for host, skew in ((h1, "0"), (h2, "50")):
        state = topo.workdir / f"{host.ns}.state"
        cfg = topo.workdir / f"{host.ns}.json"
        cfg.write_text(json.dumps({"providers": [{"name": "statefile", "path": str(state)}]}))
        nodes.append(
            topo.sidecar(host, *PW, "-a", topo.vip(), "-k", skew, "--config", str(cfg), env=env)
        )
        files.append(state)
    a, b = nodes
    wait_for(lambda: read(files[0]).startswith("MASTER"), 8, what="h1 writes MASTER")
    wait_for(lambda: read(files[1]) == "BACKUP", 5, what="h2 writes BACKUP")
    assert a.vip()["providers"]["statefile"]["details"]["path"] == str(files[0])
    # drift while MASTER: the provider's check() puts the line back and counts a repair
    files[0].write_text("tampered\n")
    wait_for(lambda: read(files[0]).startswith("MASTER"), 6, what="check() repairs the file")
    wait_for(lambda: a.vip()["counters"]["repairs"] == {"statefile": 1}, 3, what="repair counted")
    # the master goes away: the peer's plugin now says MASTER
    a.signal(signal.SIGKILL)
    wait_for(lambda: b.state() == "MASTER", 6, what="h2 MASTER")
    wait_for(lambda: read(files[1]).startswith("MASTER"), 3, what="h2 writes MASTER")
