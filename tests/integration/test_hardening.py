"""Issue 16 in namespaces: the control socket's ACL, srcip ownership, one-line start-up
errors and ctl with awkward names, against the real daemon."""

import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import pytest

from tests.integration.harness import NETNS, REPO, wait_for

pytestmark = [NETNS, pytest.mark.netns]
PW = ("-p", "secret", "-v", "41")


def ctl(node, *args):
    res = subprocess.run(
        [sys.executable, "-m", "vip_sidecar", "ctl", *args, "--socket", node.socket],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=10,
    )
    return res.returncode, res.stdout, res.stderr


def run_once(host, *args, prefix=()):
    """The daemon's start-up only: it must refuse, so it exits by itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIP_SIDECAR_")}
    res = subprocess.run(
        ["ip", "netns", "exec", host.ns, *prefix, sys.executable, "-m", "vip_sidecar", "run",
         "-i", host.ifname, *args], capture_output=True, text=True,
        env={**env, "PYTHONPATH": str(REPO)}, timeout=20,
    )
    return res.returncode, res.stderr


def test_status_socket_mode_ignores_the_umask_and_the_file_goes_at_exit(make_topo):
    topo = make_topo(1)
    old = os.umask(0)  # the daemon inherits it: before, its socket was 0777
    try:
        node = topo.sidecar(topo.hosts[0], *PW, "-a", topo.vip(), "--name", "web")
    finally:
        os.umask(old)
    wait_for(lambda: node.state() == "MASTER", 10, what="MASTER")
    assert stat.S_IMODE(os.stat(node.socket).st_mode) == 0o600
    node.signal(signal.SIGTERM)
    assert node.wait(10) == 0
    assert not os.path.exists(node.socket)


def test_ctl_addresses_names_with_spaces_slashes_and_hashes(make_topo):
    topo = make_topo(1)
    node = topo.sidecar(topo.hosts[0], *PW, "-a", topo.vip(), "--name", "web.1")
    wait_for(lambda: node.state() == "MASTER", 10, what="MASTER")
    for name in ("a b", "a/b", "a#b", "web.1/x", "web.1#"):
        rc, out, err = ctl(node, "maintenance-on", "--vip", name)
        assert (rc, out) == (1, ""), err
        assert err.count("\n") == 1 and f"HTTP 404: no VIP named {name!r}" in err, err
    assert node.state() == "MASTER"
    rc, _, err = ctl(node, "maintenance-on", "--vip", "web.1")
    assert rc == 0, err
    wait_for(lambda: node.state() == "BACKUP", 2, what="maintenance")


def test_srcip_must_be_on_the_interface_and_its_loss_counts_as_link_down(make_topo):
    topo = make_topo(1)
    (h,) = topo.hosts
    rc, err = run_once(h, "-s", topo.vip(9), *PW, "-a", topo.vip())
    assert rc == 2 and err == (
        f"vip-sidecar: config error: srcip: {topo.vip(9)} is not an address of eth0 "
        f"(it has {h.ip})\n"
    )
    node = topo.sidecar(h, *PW, "-a", topo.vip())
    wait_for(lambda: node.state() == "MASTER", 10, what="MASTER")
    h.run("ip", "addr", "del", f"{h.ip}/24", "dev", "eth0")
    wait_for(lambda: node.state() == "BACKUP", 3, what="BACKUP once srcip is gone")
    assert node.vip()["last_reason"] == "carrier_lost"
    sent = node.vip()["counters"]["adverts_sent"]
    time.sleep(4)  # more than a dead interval: no advert from an address we do not own
    assert node.vip()["counters"]["adverts_sent"] == sent and node.state() == "BACKUP"
    h.run("ip", "addr", "add", f"{h.ip}/24", "dev", "eth0")
    wait_for(lambda: node.state() == "MASTER", 10, what="MASTER once srcip is back")
    assert any(e.get("event") == "srcip" and e["present"] is False for e in node.events())


def test_start_up_errors_are_one_line_naming_the_field(make_topo, tmp_path):
    topo = make_topo(1)
    (h,) = topo.hosts
    common = ("-s", h.ip, *PW, "-a", topo.vip())
    shared = topo.workdir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    os.chmod(topo.workdir, 0o755)
    cases = [
        (("--status-socket", "/nonexistent-vs/dir/s.sock"),
         "vip-sidecar: config error: status_socket: directory /nonexistent-vs/dir does not exist"),
        (("--status-socket", str(shared / "s.sock")),
         f"vip-sidecar: config error: status_socket: directory {shared} is writable by others"),
        (("--http", f"unix:{shared}/h.sock"),
         f"vip-sidecar: config error: http: directory {shared} is writable by others"),
        (("--status-socket-group", "no-such-group-xyz"),
         "vip-sidecar: config error: status_socket_group: must be a group name"),
    ]
    for extra, start in cases:
        rc, err = run_once(h, *common, *extra)
        assert rc == 2 and err.count("\n") == 1 and err.startswith(start), err
    assert not list(shared.iterdir())
    # a port in use inside the namespace, and no CAP_NET_RAW: refused before any log line
    holder = subprocess.Popen(["ip", "netns", "exec", h.ns, sys.executable, "-c",
                               "import socket, time; s = socket.create_server(('0.0.0.0', 9477));"
                               " print('ok', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        rc, err = run_once(h, *common, "--http", f"{h.ip}:9477")
        assert rc == 2 and err == (
            f"vip-sidecar: config error: http: cannot listen on {h.ip}:9477: "
            "Address already in use\n"
        ), err
    finally:
        holder.kill()
        holder.wait()
    if shutil.which("setpriv"):
        rc, err = run_once(h, *common, prefix=("setpriv", "--bounding-set", "-net_raw",
                                               "--inh-caps", "-net_raw", "--"))
        assert rc == 2 and err == (
            "vip-sidecar: interface eth0: raw sockets need CAP_NET_RAW (run as root or grant it)\n"
        ), err
