"""The chaos soak in CI: a 2-minute seeded run of `python -m bench.chaos` (three nodes, a
prober, random faults) must end with no violation of the outside checker's invariants.
docs/reliability.md has the 30-minute run and how to replay a failing seed."""

import json
import subprocess
import sys

import pytest

from tests.integration.harness import NETNS, REPO

pytestmark = [NETNS, pytest.mark.netns]

SEED = 15


@pytest.mark.timeout(400)
def test_two_minute_chaos_run_has_no_violations(tmp_path):
    out = tmp_path / "chaos.json"
    res = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--minutes", "2", "--seed", str(SEED),
         "--json", str(out), "--logs", str(tmp_path / "logs")],
        cwd=REPO, capture_output=True, text=True, timeout=360,
    )  # fmt: skip
    report = res.stdout[-4000:] + res.stderr[-4000:]
    assert out.exists(), report
    result = json.loads(out.read_text())
    # the run really exercised something: faults fired and the prober saw an owner
    assert len(result["faults"]) >= 5, report
    assert result["skipped"] == [], report
    assert result["bed_errors"] == [], report
    assert result["recovery_s"]["n"] >= 3, report
    assert result["timeline"], report
    assert result["violations"] == [], report
    assert res.returncode == 0, report
