"""Operator control over the unix status socket: planned demotion and maintenance."""

import http.client
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.harness import NETNS, REPO, wait_for

pytestmark = [NETNS, pytest.mark.netns]
PW = ("-p", "secret", "-v", "31")


def ctl(node, *args):
    res = subprocess.run([sys.executable, "-m", "vip_sidecar", "ctl", *args, "--socket",
                          node.socket], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=10)
    return res.returncode, res.stdout, res.stderr


def test_planned_demotion_and_maintenance(make_topo):
    topo = make_topo(2)
    topo.attach_root()
    h1, h2 = topo.hosts
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "-k", "0", "--http", f"{h1.ip}:9477")
    wait_for(lambda: a.state() == "MASTER", 6, what="a MASTER")
    b = topo.sidecar(h2, *PW, "-a", topo.vip(), "-k", "50")
    wait_for(lambda: b.state() == "BACKUP", 5, what="b BACKUP")
    time.sleep(1)

    # state-changing endpoints refuse TCP clients
    conn = http.client.HTTPConnection(h1.ip, 9477, timeout=3)
    conn.request("POST", "/v1/vips/all/demote")
    assert conn.getresponse().status == 403
    conn.close()
    assert a.state() == "MASTER"

    t0 = time.time()
    rc, out, err = ctl(a, "demote", "--hold", "3")
    assert rc == 0, err
    assert json.loads(out)["demoted"] == {"vhid31": True}
    took = wait_for(lambda: b.became("MASTER", after=t0), 1, what="b takes over") - t0
    print(f"\nplanned demotion: peer MASTER after {took * 1000:.1f} ms")
    assert a.vip()["last_reason"] == "operator"
    time.sleep(3.5)  # hold expired, but b advertises: a stays BACKUP (no preempt)
    assert a.state() == "BACKUP" and b.state() == "MASTER"

    assert ctl(a, "maintenance-on")[0] == 0
    assert a.vip()["maintenance"] is True
    b.signal(signal.SIGKILL)
    time.sleep(5)  # longer than a's dead interval: maintenance keeps it from claiming
    assert a.state() == "BACKUP"
    assert ctl(a, "maintenance-off")[0] == 0
    wait_for(lambda: a.state() == "MASTER", 5, what="a claims after maintenance")
    rc, _, err = ctl(a, "demote", "--vip", "nosuch")
    assert rc == 1 and "no VIP named 'nosuch'" in err
