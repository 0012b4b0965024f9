"""The alias provider and the provider pipeline on real kernel addresses (issue: alias)."""

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.harness import NETNS, Sniffer, ping_until_reply, wait_for

pytestmark = [NETNS, pytest.mark.netns]

PW = ("-p", "secret", "-v", "9")
ALIAS = {"name": "alias", "reassert_interval": 1}


def with_providers(topo, name, providers, **extra):
    path = topo.workdir / f"{name}.json"
    path.write_text(json.dumps({"providers": providers, **extra}))
    return ("--config", str(path))


def node(topo, host, providers, *args, name=None):
    name = name or f"n{topo.hosts.index(host) + 1}-{len(topo.procs)}"
    return topo.sidecar(
        host, *PW, "-a", topo.vip(), *with_providers(topo, name, providers), *args, name=name
    )


def garps_from(sniffer, mac, vip, after):
    mac_b, vip_b = bytes.fromhex(mac.replace(":", "")), bytes(map(int, vip.split(".")))
    return [
        ts
        for ts, f in sniffer.frames()
        if ts >= after
        and f[6:12] == mac_b
        and f[12:14] == b"\x08\x06"
        and f[20:22] == b"\x00\x01"
        and f[28:32] == vip_b
        and f[38:42] == vip_b
    ]


def test_vip_follows_the_master_with_garp_and_ping(make_topo):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    vip = topo.vip()
    sniff = Sniffer(topo, h3, 0x0806)
    a = node(topo, h1, [ALIAS], "-k", "0")
    wait_for(lambda: h1.has_address(vip), 6, what="VIP on h1")
    b = node(topo, h2, [ALIAS], "-k", "50")
    wait_for(lambda: b.state() == "BACKUP", 5, what="b BACKUP")
    time.sleep(1)
    assert h1.has_address(vip) and not h2.has_address(vip)
    assert ping_until_reply(h3, vip, 3) is not None
    assert garps_from(sniff, h1.mac, vip, 0)

    # the master node dies (kill -9 and its link goes away); its address is a leftover
    t0 = time.time()
    a.signal(signal.SIGKILL)
    h1.run("ip", "link", "set", "eth0", "down")
    took = ping_until_reply(h3, vip, 10)
    assert took is not None
    print(f"\nkill -9 -> first ping reply from the new master after {took:.3f}s")
    assert took < 3 * (1 + 50 / 256) + 1.5
    assert h2.has_address(vip)
    assert garps_from(sniff, h2.mac, vip, t0), "no gratuitous ARP from the new master"
    neigh = h3.run("ip", "neigh", "show", vip).stdout
    assert h2.mac in neigh
    # the crashed node comes back as BACKUP: its start-up down action removes the stale VIP
    assert h1.has_address(vip)
    h1.run("ip", "link", "set", "eth0", "up")
    a = node(topo, h1, [ALIAS], "-k", "0")
    wait_for(lambda: not h1.has_address(vip), 5, what="stale VIP removed by restart")
    assert a.state() == "BACKUP" and h2.has_address(vip)

    # SIGTERM of b: a takes over at once; b removes its copy before exiting
    t0 = time.time()
    b.signal(signal.SIGTERM)
    took = ping_until_reply(h3, vip, 5)
    assert took is not None
    print(f"SIGTERM -> first ping reply from the new master after {took:.3f}s")
    assert b.wait(10) == 0
    assert h1.has_address(vip) and not h2.has_address(vip)
    assert garps_from(sniff, h1.mac, vip, t0)
    # ucarp's schedule: a second GARP two advert intervals after the first
    wait_for(lambda: len(garps_from(sniff, h1.mac, vip, t0)) >= 2, 4, what="delayed GARP")
    g1, g2 = garps_from(sniff, h1.mac, vip, t0)[:2]
    assert 1.5 < g2 - g1 < 2.6


@pytest.mark.parametrize("fault", ["raise", "hang"])
def test_failing_provider_demotes_the_node_and_the_peer_keeps_the_vip(make_topo, fault):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    vip = topo.vip()
    b = node(topo, h2, [ALIAS], "-k", "50")
    wait_for(lambda: h2.has_address(vip), 6, what="b holds the VIP")
    flag = topo.workdir / "fault"
    flag.write_text("on")
    calls = topo.workdir / "calls.log"
    faulty = {
        "name": "tests.integration.testproviders",
        "id": "faulty",
        "timeout": 1,
        f"{'fail' if fault == 'raise' else 'hang'}_file": str(flag),
        "log": str(calls),
    }
    a = node(topo, h1, [faulty, ALIAS], "-k", "0", "-P")
    wait_for(
        lambda: any(e.get("event") == "demote" for e in a.events()),
        6,
        what="demotion after provider failure",
    )
    wait_for(lambda: b.state() == "MASTER" and h2.has_address(vip), 3, what="peer master again")
    time.sleep(3)  # hold-down expired; a's demotion keeps it from preempting again
    assert a.alive() and a.state() == "BACKUP"
    assert not h1.has_address(vip) and h2.has_address(vip)
    failure = next(e for e in a.events() if e.get("event") == "provider_failure")
    assert failure["provider"] == "faulty" and failure["action"] == "up"
    assert ("timed out" in failure["error"]) == (fault == "hang")
    st = a.vip()
    assert st["demotion"] >= 100 and st["advskew"] >= 100
    assert "faulty" in st["last_failure"]
    assert b.vip()["counters"]["adverts_received"] > 0  # a kept advertising / bowed out


def test_veto_keeps_node_backup_while_peer_holds_vip(make_topo):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    vip = topo.vip()
    b = node(topo, h2, [ALIAS], "-k", "50")
    wait_for(lambda: h2.has_address(vip), 6, what="b holds the VIP")
    veto = topo.workdir / "veto"
    veto.write_text("fence held by n2")
    calls = topo.workdir / "calls.log"
    fence = {
        "name": "tests.integration.testproviders",
        "id": "fence",
        "veto_file": str(veto),
        "log": str(calls),
    }
    a = node(topo, h1, [fence, ALIAS], "-k", "0", "-P")
    wait_for(
        lambda: "pre_master" in (calls.read_text() if calls.exists() else ""),
        4,
        what="promotion asked",
    )
    time.sleep(2)
    assert a.state() == "BACKUP" and b.state() == "MASTER"
    assert not h1.has_address(vip) and h2.has_address(vip)
    assert "fence held by n2" in (a.vip()["last_failure"] or "")
    assert a.vip()["counters"]["vetoes"] >= 1
    assert " up" not in calls.read_text()
    # the fence is released and the peer dies: now a claims
    veto.unlink()
    b.signal(signal.SIGKILL)
    wait_for(lambda: a.state() == "MASTER" and h1.has_address(vip), 8, what="a claims")


def test_vip_removed_by_hand_is_repaired_within_reassert_period(make_topo):
    topo = make_topo(1)
    (h1,) = topo.hosts
    vip = topo.vip()
    a = node(topo, h1, [ALIAS])
    wait_for(lambda: h1.has_address(vip), 6, what="VIP on h1")
    h1.run("ip", "addr", "del", f"{vip}/32", "dev", "eth0")
    t0 = time.time()
    wait_for(lambda: h1.has_address(vip), 3, what="repair")
    print(f"\nVIP removed by hand, repaired after {time.time() - t0:.3f}s")
    assert a.vip()["counters"]["repairs"].get("alias") == 1


SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 8080))
s.listen()
print("listening", flush=True)
c, _ = s.accept()
c.sendall(b"hello from the backup-ready service")
c.close()
"""


def test_nonlocal_bind_lets_a_backup_service_bind_the_vip(make_topo):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    vip = topo.vip()
    a = node(topo, h1, [ALIAS], "-k", "0")
    wait_for(lambda: h1.has_address(vip), 6, what="VIP on h1")
    b = node(topo, h2, [{**ALIAS, "nonlocal_bind": True}], "-k", "50")
    wait_for(lambda: b.state() == "BACKUP", 5, what="b BACKUP")
    # control: without the sysctl a host that lacks the VIP cannot bind it
    res = h3.run(sys.executable, "-c", SERVER, vip, check=False)
    assert res.returncode != 0 and "Cannot assign requested address" in res.stderr
    server = subprocess.Popen(
        ["ip", "netns", "exec", h2.ns, sys.executable, "-c", SERVER, vip],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        assert not h2.has_address(vip)
        a.signal(signal.SIGKILL)
        wait_for(lambda: h2.has_address(vip), 6, what="failover to b")
        h3.run("ip", "neigh", "flush", "all")
        out = h3.run(
            sys.executable,
            "-c",
            f"import socket;c=socket.create_connection(({vip!r},8080),timeout=5);"
            "print(c.recv(100).decode())",
        ).stdout
        assert out.strip() == "hello from the backup-ready service"
        assert server.wait(5) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_a_restarted_node_removes_its_stale_vip_before_a_slow_provider_initialises(make_topo):
    """After a kill -9 the kernel keeps answering for the VIP until a daemon removes it;
    with a fence, the next Lease holder may already serve it. The restarted daemon's
    alias clean-up must not wait for a slow init (chaos --kubernetes found 2-6 s)."""
    topo = make_topo(1)
    (h1,) = topo.hosts
    vip = topo.vip()
    h1.run("ip", "addr", "add", f"{vip}/32", "dev", h1.ifname)  # the kill -9's leftover
    calls = topo.workdir / "calls.log"
    slow = {"name": "tests.integration.testproviders", "id": "slow", "timeout": 10,
            "init_delay": 3, "log": str(calls)}
    t0 = time.time()
    a = node(topo, h1, [slow, ALIAS], "-k", "0")
    wait_for(lambda: not h1.has_address(vip), 10, what="stale VIP removed")
    removed = time.time()
    wait_for(lambda: calls.exists() and "init done" in calls.read_text(), 10, what="slow init")
    init_done = float(calls.read_text().split()[0])
    assert removed < init_done, (removed - t0, init_done - t0)
    deleted = [e for e in a.events() if e.get("event") == "alias_del"]
    assert deleted, a.text()[-2000:]
