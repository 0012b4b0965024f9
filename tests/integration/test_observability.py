"""/healthz /readyz /status /metrics, status table and logs on a real daemon (issue: obs)."""

import ast
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.harness import NETNS, REPO, wait_for

pytestmark = [NETNS, pytest.mark.netns]
PW = ("-p", "secret", "-v", "11")
PORT = 9477


def parse_text(text: str) -> dict:
    """Samples by name, through prometheus-client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def get(ip, path, timeout=2.0):
    conn = http.client.HTTPConnection(ip, PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def metrics(ip):
    status, body = get(ip, "/metrics")
    assert status == 200
    return parse_text(body)


def sample(m, name, **labels):
    return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def test_metrics_follow_a_real_failover(make_topo):
    topo = make_topo(2)
    topo.attach_root()
    h1, h2 = topo.hosts
    cfg = topo.workdir / "alias.json"
    cfg.write_text(json.dumps({"providers": [{"name": "alias"}]}))
    a = topo.sidecar(
        h1, *PW, "-a", topo.vip(), "-k", "0", "--config", str(cfg), "--http", f"{h1.ip}:{PORT}"
    )
    b = topo.sidecar(
        h2, *PW, "-a", topo.vip(), "-k", "50", "--config", str(cfg), "--http", f"{h2.ip}:{PORT}"
    )
    wait_for(lambda: a.state() == "MASTER", 6, what="a MASTER")
    time.sleep(1.5)
    mb = metrics(h2.ip)
    assert sample(mb, "vip_sidecar_state", vip="vhid11") == 1
    assert sample(mb, "vip_sidecar_transitions_total", to_state="MASTER") == 0
    assert sample(mb, "vip_sidecar_adverts_received_total") >= 1
    assert sample(mb, "vip_sidecar_failover_phase_seconds_count", phase="elected") == 0
    ma = metrics(h1.ip)
    assert sample(ma, "vip_sidecar_is_master") == 1
    assert sample(ma, "vip_sidecar_adverts_sent_total") >= 2
    assert sample(ma, "vip_sidecar_transitions_total", to_state="MASTER", reason="master_down") == 1

    a.signal(signal.SIGKILL)
    h1.run("ip", "link", "set", "eth0", "down")
    wait_for(lambda: b.state() == "MASTER", 6, what="b MASTER")
    mb = metrics(h2.ip)
    assert sample(mb, "vip_sidecar_state", vip="vhid11") == 2
    assert (
        sample(
            mb,
            "vip_sidecar_transitions_total",
            from_state="BACKUP",
            to_state="MASTER",
            reason="master_down",
        )
        == 1
    )
    assert sample(mb, "vip_sidecar_failover_phase_seconds_count", phase="elected") == 1
    assert sample(mb, "vip_sidecar_failover_phase_seconds_count", phase="provider:alias") == 1
    assert sample(mb, "vip_sidecar_failover_phase_seconds_count", phase="complete") == 1
    done = sample(mb, "vip_sidecar_failover_phase_seconds_sum", phase="complete")
    alias = sample(mb, "vip_sidecar_failover_phase_seconds_sum", phase="provider:alias")
    assert 0 <= alias <= done < 1.0, (alias, done)
    assert (
        sample(
            mb, "vip_sidecar_provider_action_duration_seconds_count", provider="alias", action="up"
        )
        == 1
    )
    assert sample(mb, "vip_sidecar_provider_failures_total") == 0
    st = json.loads(get(h2.ip, "/status")[1])
    lf = st["vips"][0]["last_failover"]
    assert lf["reason"] == "master_down" and lf["detected_to_complete_s"] == pytest.approx(
        done, abs=1e-3
    )
    assert st["vips"][0]["providers"]["alias"]["last"]["ok"] is True
    # the human table of `vip-sidecar status`
    out = subprocess.run(
        [sys.executable, "-m", "vip_sidecar", "status", "--url", f"http://{h2.ip}:{PORT}"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
    ).stdout
    row = out.splitlines()[1].split()
    assert row[:5] == ["vhid11", "11", "eth0", topo.vip(), "MASTER"]


def test_drop_counters_in_metrics(make_topo):
    topo = make_topo(2)
    topo.attach_root()
    h1, h2 = topo.hosts
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "--http", f"{h1.ip}:{PORT}")
    topo.sidecar(h2, "-p", "other", "-v", "11", "-a", topo.vip())  # wrong password
    wait_for(lambda: _safe_get(h1.ip, "/healthz") == 200, 6, what="http up")
    wait_for(
        lambda: (
            sample(metrics(h1.ip), "vip_sidecar_packets_dropped_total", reason="bad_digest") >= 2
        ),
        8,
        what="bad_digest drops",
    )
    assert a.state() == "MASTER"


def test_healthz_fails_when_adverts_stall_and_recovers(make_topo):
    topo = make_topo(1)
    topo.attach_root()
    (h1,) = topo.hosts
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "-S", "--http", f"{h1.ip}:{PORT}")
    wait_for(lambda: a.state() == "MASTER", 6, what="MASTER")
    assert get(h1.ip, "/healthz") == (200, "ok\n")
    # stopped transport: the link is down (-S keeps us MASTER), every advert write fails
    h1.run("ip", "link", "set", "eth0", "down")
    try:
        wait_for(lambda: a.vip()["counters"]["send_errors"] >= 3, 5, what="send errors")
    finally:
        h1.run("ip", "link", "set", "eth0", "up")
    # ... but the HTTP server is on the same interface: check health over the unix socket
    h1.run("ip", "link", "set", "eth0", "down")
    try:
        wait_for(lambda: not a.status()["healthy"], 8, what="unhealthy")
        assert "no advertisement sent" in a.status()["health_detail"]
    finally:
        h1.run("ip", "link", "set", "eth0", "up")
    wait_for(lambda: a.status()["healthy"], 5, what="healthy again")
    assert get(h1.ip, "/healthz")[0] == 200
    # blocked event loop: the probe gets no answer at all, which a kubelet counts as failure
    a.signal(signal.SIGSTOP)
    try:
        with pytest.raises((TimeoutError, socket.timeout, OSError)):
            get(h1.ip, "/healthz", timeout=1.0)
    finally:
        a.signal(signal.SIGCONT)
    wait_for(lambda: get(h1.ip, "/healthz")[0] == 200, 8, what="healthy after SIGCONT")


def test_readyz_reflects_provider_init_failure(make_topo):
    topo = make_topo(1)
    topo.attach_root()
    (h1,) = topo.hosts
    cfg = topo.workdir / "bad.json"
    cfg.write_text(
        json.dumps(
            {
                "providers": [
                    {"name": "tests.integration.testproviders", "id": "broken", "init_fail": True}
                ]
            }
        )
    )
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "--config", str(cfg), "--http", f"{h1.ip}:{PORT}")
    wait_for(lambda: a.status() is not None, 6, what="status")
    status, body = get(h1.ip, "/readyz")
    assert status == 503 and "provider initialisation failed for vhid11" in body
    assert get(h1.ip, "/healthz")[0] == 200  # alive, just not ready
    ok = topo.workdir / "ok.json"
    ok.write_text(
        json.dumps({"providers": [{"name": "tests.integration.testproviders", "id": "fine"}]})
    )
    a.signal(signal.SIGTERM)
    a.wait(10)
    topo.sidecar(h1, *PW, "-a", topo.vip(), "--config", str(ok), "--http", f"{h1.ip}:{PORT}")
    wait_for(lambda: _safe_get(h1.ip, "/readyz") == 200, 6, what="ready")


def _safe_get(ip, path):
    try:
        return get(ip, path)[0]
    except OSError:
        return None


LOAD = """
import http.client, sys
paths = ["/status", "/metrics", "/healthz", "/readyz", "/nope", "/status?x=1"]
c = http.client.HTTPConnection(sys.argv[1], int(sys.argv[2]), timeout=5)
codes = {}
for i in range(int(sys.argv[3])):
    c.request("GET", paths[i % len(paths)])
    r = c.getresponse()
    r.read()
    codes[r.status] = codes.get(r.status, 0) + 1
print(codes)
"""


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_404_and_10000_requests_without_memory_growth(make_topo):
    topo = make_topo(1)
    (h1,) = topo.hosts
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "--http", f"127.0.0.1:{PORT}")
    wait_for(lambda: a.state() == "MASTER", 6, what="MASTER")
    warm = h1.run(sys.executable, "-c", LOAD, "127.0.0.1", str(PORT), "600").stdout
    assert "404: 100" in warm
    before = rss_kb(a.pid)
    t0 = time.monotonic()
    out = h1.run(sys.executable, "-c", LOAD, "127.0.0.1", str(PORT), "10000").stdout
    elapsed = time.monotonic() - t0
    after = rss_kb(a.pid)
    codes = ast.literal_eval(out.strip())
    n404 = sum(1 for i in range(10000) if i % 6 == 4)  # "/nope" is every sixth path
    assert codes == {200: 10000 - n404, 404: n404}, codes
    growth = after - before
    bound_kb = 4096
    print(
        f"\n10000 requests in {elapsed:.1f}s; RSS {before} kB -> {after} kB "
        f"(growth {growth} kB, bound {bound_kb} kB)"
    )
    assert growth < bound_kb
    assert a.alive() and a.state() == "MASTER"


def test_syslog_facility_is_honoured(make_topo, tmp_path):
    topo = make_topo(1)
    (h1,) = topo.hosts
    path = str(topo.workdir / "syslog.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(8)
    cfg = topo.workdir / "syslog.json"
    cfg.write_text(json.dumps({"syslog_socket": path}))
    try:
        # harness passes --facility none; a later flag wins
        a = topo.sidecar(h1, *PW, "-a", topo.vip(), "--config", str(cfg))
        a.signal(signal.SIGKILL)
        a.wait(5)
        node = topo.procs.pop()
        node.stop()
        from tests.integration.harness import Proc

        proc = Proc(
            h1,
            [
                sys.executable,
                "-m",
                "vip_sidecar",
                "run",
                "-i",
                "eth0",
                "-s",
                h1.ip,
                *PW,
                "-a",
                topo.vip(),
                "--config",
                str(cfg),
                "-f",
                "local3",
            ],
            topo.workdir / "syslog-node.log",
            env={"PYTHONPATH": str(REPO)},
        )
        topo.procs.append(proc)
        msgs = []
        while not any(b"Switching to state: BACKUP" in m for m in msgs):
            msgs.append(sock.recv(4096))
        msg = next(m for m in msgs if b"Switching to state: BACKUP" in m)
        # PRI = facility * 8 + severity: local3 (19) and warning (4)
        assert msg.startswith(b"<156>"), msg
        assert b"[WARNING] [vhid11] Switching to state: BACKUP" in msg
    finally:
        sock.close()
