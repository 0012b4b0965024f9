"""The chart's alert rules under `promtool test rules` (synthetic series), and
`promtool check metrics` on a real scrape of a running daemon in a netns."""

import http.client
import json
import re
import shutil
import subprocess
import time

import pytest
import yaml

from tests.integration.harness import NETNS, REPO, wait_for

PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="needs Debian's prometheus package")
RULES = REPO / "helm" / "vip-sidecar" / "files" / "prometheus-rules.yaml"
RULE_TESTS = REPO / "tests" / "data" / "prometheus-rules-test.yaml"
ALERTS = {
    "VipSidecarNoMaster",
    "VipSidecarSplitBrain",
    "VipSidecarProviderFailures",
    "VipSidecarDemoted",
    "VipSidecarAdvertsLate",
    "VipSidecarUnhealthy",
}


def promtool(*args, stdin=None, cwd=None):
    return subprocess.run(
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True, cwd=cwd, timeout=120
    )


def rules():
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_rule_file_is_valid_and_has_every_alert():
    res = promtool("check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert {r["alert"] for r in rules()} == ALERTS


def test_promtool_rule_tests_pass():
    res = promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr
    # every alert is exercised, firing at least once
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        t["alertname"] for case in cases for t in case["alert_rule_test"] if t["exp_alerts"]
    }
    assert fired == ALERTS


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("VipSidecarSplitBrain", "> 1", "> 2"),
        ("VipSidecarNoMaster", "+ 10", "+ 600"),
        ("VipSidecarDemoted", "> 0", "> 100"),
    ],
)
def test_a_weakened_rule_fails_the_rule_tests(tmp_path, alert, old, new):
    """The synthetic series catch a rule that would stay silent."""
    doc = yaml.safe_load(RULES.read_text())
    for rule in doc["groups"][0]["rules"]:
        if rule["alert"] == alert:
            assert old in rule["expr"]
            rule["expr"] = rule["expr"].replace(old, new)
    rules_dir = tmp_path / "helm" / "vip-sidecar" / "files"
    rules_dir.mkdir(parents=True)
    (rules_dir / RULES.name).write_text(yaml.safe_dump(doc))
    (tmp_path / "tests" / "data").mkdir(parents=True)
    shutil.copy(RULE_TESTS, tmp_path / "tests" / "data" / RULE_TESTS.name)
    res = promtool("test", "rules", str(tmp_path / "tests" / "data" / RULE_TESTS.name))
    assert res.returncode != 0
    assert f"alertname: {alert}" in res.stdout + res.stderr


@NETNS
@pytest.mark.netns
def test_promtool_check_metrics_clean_on_a_real_scrape(make_topo):
    topo = make_topo(1)
    topo.attach_root()
    (h1,) = topo.hosts
    fail = topo.workdir / "fail"
    fail.write_text("")
    cfg = topo.workdir / "cfg.json"
    cfg.write_text(
        json.dumps(
            {"providers": [{"name": "tests.integration.testproviders", "fail_file": str(fail)}]}
        )
    )
    node = topo.sidecar(
        h1, "-p", "pw", "-v", "51", "-a", topo.vip(), "--config", str(cfg),
        "--http", f"{h1.ip}:9477",
    )  # fmt: skip
    # alone: MASTER after the dead interval, the provider fails, the node is demoted
    wait_for(
        lambda: (node.status() or {}).get("vips", [{}])[0].get("demotion", 0) > 0,
        15,
        what="a provider failure and a demotion",
    )
    time.sleep(1)
    conn = http.client.HTTPConnection(h1.ip, 9477, timeout=3)
    conn.request("GET", "/metrics")
    body = conn.getresponse().read().decode()
    conn.close()
    res = promtool("check", "metrics", stdin=body)
    assert res.returncode == 0 and res.stdout + res.stderr == "", res.stdout + res.stderr
    # every series the alert rules read is in a real scrape, with samples
    used = {m for r in rules() for m in re.findall(r"\b(vip_sidecar_\w+)", r["expr"])}
    sampled = {line.split("{")[0].split(" ")[0] for line in body.splitlines() if line[:1] != "#"}
    assert used <= sampled, used - sampled
    assert 'vip_sidecar_healthy 1.0' in body
    assert re.search(r'vip_sidecar_provider_failures_total\{[^}]*action="up"[^}]*\} [1-9]', body)
