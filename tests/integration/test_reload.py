"""`vip-sidecar ctl reload` on real daemons in network namespaces: a third host pings the
untouched VIP through the reload and loses nothing; removed, added, provider-swapped and
invalid configurations; systemd sees RELOADING=1/READY=1; SIGHUP still means exit."""

import json
import re
import signal
import time

import pytest

from tests.integration.harness import NETNS, Proc, wait_for
from tests.integration.test_control import ctl
from tests.integration.test_systemd_notify import NotifyListener

pytestmark = [NETNS, pytest.mark.netns]
FAULTY = "tests.integration.testproviders"


def vip(name, vhid, addr, skew=0, providers=("alias",), **extra):
    return {"name": name, "vhid": vhid, "addr": addr, "advskew": skew,
            "providers": list(providers), **extra}  # fmt: skip


def states(node):
    st = node.status() or {"vips": []}
    return {v["name"]: v["state"] for v in st["vips"]}


def test_reload_without_a_flap(make_topo):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    log = topo.workdir / "faulty.log"
    faulty = {"name": FAULTY, "log": str(log)}
    web, db, gone, swapm, added = (topo.vip(n) for n in (100, 101, 102, 103, 104))
    cfg1, cfg2 = topo.workdir / "h1.json", topo.workdir / "h2.json"
    first = {
        "pass": "secret",
        "vips": [vip("web", 71, web), vip("db", 72, db, skew=100),
                 vip("gone", 73, gone, preempt=True), vip("swapm", 74, swapm)],
    }  # fmt: skip
    cfg1.write_text(json.dumps(first))
    cfg2.write_text(json.dumps({"pass": "secret", "vips": [vip("db", 72, db),
                                vip("gone", 73, gone, skew=100)]}))  # fmt: skip
    b = topo.sidecar(h2, "--config", str(cfg2), name="h2")
    wait_for(lambda: states(b) == {"db": "MASTER", "gone": "MASTER"}, 8, what="h2 alone")
    listener = NotifyListener(str(topo.workdir / "notify.sock"))
    try:
        a = topo.sidecar(h1, "--config", str(cfg1), name="h1", env=listener.env)
        wait_for(
            lambda: states(a) == {"web": "MASTER", "db": "BACKUP", "gone": "MASTER",
                                  "swapm": "MASTER"} and states(b)["gone"] == "BACKUP",
            10,
            what="h1 MASTER of web, swapm and (preempting h2) gone; BACKUP of db",
        )  # fmt: skip
        wait_for(lambda: h1.has_address(web) and h1.has_address(gone), 5, what="h1 addresses")
        web_transitions = a.transitions()
        ping = Proc(h3, ["ping", "-n", "-i", "0.05", "-c", "160", web], topo.workdir / "ping.log")
        topo.procs.append(ping)
        time.sleep(1.5)

        second = {
            "pass": "secret",
            "vips": [
                vip("web", 71, web),  # unchanged
                vip("db", 72, db, skew=100, providers=("alias", faulty)),  # BACKUP: swap now
                vip("swapm", 74, swapm, providers=("alias", faulty)),  # MASTER: swap later
                vip("added", 75, added),
            ],  # gone: removed
        }
        cfg1.write_text(json.dumps(second))
        t0 = time.time()
        rc, out, err = ctl(a, "reload")
        took = time.time() - t0
        assert rc == 0, err
        result = json.loads(out)
        assert result == {
            "added": ["added"],
            "removed": ["gone"],
            "restarted": [],
            "providers_swapped": ["db"],
            "providers_swap_at_next_backup": ["swapm"],
            "unchanged": ["web"],
            "restart_required": [],
        }
        # the removed VIP bowed out: h2 (BACKUP at skew 100) took it at once
        assert b.became("MASTER", after=t0) is not None
        assert not h1.has_address(gone) and h2.has_address(gone)
        wait_for(lambda: states(a).get("added") == "MASTER", 6, what="the added VIP claimed")
        wait_for(lambda: h1.has_address(added), 3, what="its address")
        st = a.status()
        by_name = {v["name"]: v for v in st["vips"]}
        assert list(by_name["db"]["providers"]) == ["alias", FAULTY]
        wait_for(
            lambda: log.exists() and "down" in log.read_text(), 3, what="new db providers' down"
        )
        assert list(by_name["swapm"]["providers"]) == ["alias"]  # still MASTER: kept
        assert st["reload"]["pending_provider_swaps"] == ["eth0/74"]

        # the untouched VIP: no transition, the address never left, no echo lost
        web_events = [
            e for e in a.events() if e.get("event") == "transition" and e.get("vip") == "web"
        ]
        assert len(web_events) == 2  # INIT -> BACKUP -> MASTER at start-up, nothing since
        assert a.transitions()[: len(web_transitions)] == web_transitions
        assert states(a)["web"] == "MASTER" and h1.has_address(web)
        assert ping.wait(20) == 0
        summary = re.search(r"(\d+) packets transmitted, (\d+) received", ping.text())
        assert summary, ping.text()
        sent, got = int(summary.group(1)), int(summary.group(2))
        print(f"\nreload took {took:.2f}s; ping through it: {got}/{sent} echoes")
        assert sent == got == 160

        # the MASTER's swap happens at its next move to BACKUP
        assert ctl(a, "demote", "--vip", "swapm", "--hold", "2")[0] == 0
        wait_for(
            lambda: (
                list({v["name"]: v for v in a.status()["vips"]}["swapm"]["providers"])
                == ["alias", FAULTY]
            ),
            5,
            what="swapm's providers swapped once BACKUP",
        )
        wait_for(lambda: states(a)["swapm"] == "MASTER", 8, what="swapm MASTER again")
        wait_for(lambda: "up" in log.read_text().split(), 5, what="the new provider's up")
        assert a.status()["reload"]["pending_provider_swaps"] == []

        # invalid config: rejected, field named, nothing changed
        before = states(a)
        bad = json.loads(json.dumps(second))
        bad["vips"][3]["vhid"] = 300
        cfg1.write_text(json.dumps(bad))
        rc, out, err = ctl(a, "reload")
        assert rc == 1
        assert (
            "reload rejected, running config kept: vips[3].vhid: must be an integer 1..255" in err
        )
        assert len(err.strip().splitlines()) == 1
        assert states(a) == before

        # systemd saw both reloads: RELOADING=1 then READY=1 (the second with the reason)
        reloading = listener.with_key("RELOADING")
        readies = listener.with_key("READY")
        assert len(reloading) == 2 and len(readies) == 3
        assert "reload rejected: vips[3].vhid" in readies[-1][1]["STATUS"]

        # SIGHUP keeps ucarp's meaning: a graceful exit, not a reload
        a.signal(signal.SIGHUP)
        assert a.wait(15) == 0
        assert any(e.get("event") == "stop" and e.get("signal") == "SIGHUP" for e in a.events())
    finally:
        listener.close()
