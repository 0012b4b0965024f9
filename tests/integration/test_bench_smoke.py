"""Smoke test of bench/: the --quick mode of every benchmark runs to the end against the
real ucarp and keepalived and prints its table and ratios (about 5 minutes in total).

The numbers themselves are not asserted (they depend on the machine); docs/benchmarks.md
has the full runs.
"""

import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.harness import NETNS, REPO

TOOLS = ("ucarp", "keepalived", "tcpdump", "ping")

pytestmark = [
    NETNS,
    pytest.mark.netns,
    pytest.mark.ucarp,
    pytest.mark.keepalived,
    pytest.mark.skipif(
        any(shutil.which(t) is None for t in TOOLS),
        reason=f"needs {', '.join(TOOLS)} (apt-get install -y ucarp keepalived tcpdump)",
    ),
]

NUMBER = r"\d+(\.\d+)?(e[+-]?\d+)?x"


@pytest.mark.parametrize(
    ("bench", "tables", "ratios"),
    [
        (
            "failover",
            ["Failover on node death", "Planned failover (SIGTERM"],
            [
                "vip-sidecar/ucarp takeover median",
                "vip-sidecar/keepalived takeover median",
                "vip-sidecar/ucarp first reply median",
                "vip-sidecar/ucarp reply gap median",
            ],
        ),
        (
            "ipv6",
            ["Failover on node death, IPv4 and IPv6 VIPs on the same hosts"],
            [
                "vip-sidecar IPv6/IPv4 takeover median",
                "vip-sidecar IPv6/IPv4 takeover after last advert median",
                "vip-sidecar IPv6/IPv4 first reply median",
            ],
        ),
        (
            "footprint",
            ["Idle footprint over"],
            [
                "vip-sidecar(alias)/ucarp RSS master",
                "vip-sidecar(alias)/keepalived CPU master",
                "vip-sidecar RSS with boto3+kubernetes / alias-only (master)",
            ],
        ),
        (
            "fasttimers",
            ["Steady -b 0", "Node death (link down + kill -9 of the master) at the fastest"],
            ["vip-sidecar/keepalived first reply median"],
        ),
        (
            "scale",
            ["Scale over"],
            ["N=1 vip-sidecar/ucarp CPU master", "N=16 vip-sidecar/ucarp jitter p99"],
        ),
    ],
)
def test_quick_mode_completes_and_prints_ratios(bench, tables, ratios):
    res = subprocess.run(
        [sys.executable, "-m", f"bench.{bench}", "--quick"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = res.stdout
    print(out)
    assert res.returncode == 0, out[-4000:] + res.stderr[-4000:]
    for title in tables:
        assert title in out
    for label in ratios:
        assert re.search(rf"^  {re.escape(label)}: {NUMBER}$", out, re.M), f"no ratio {label!r}"
