"""The chaos bed: three vip-sidecar nodes (alias + a fail_on_error script provider, and
with `kubernetes` the Lease fence against a real apiserver: bench/chaos/kube.py) and a
prober host on one bridge, a seeded fault schedule played against them, and the
recorded history handed to the checker.

Every namespace and process is removed on exit (bench_topology), Ctrl-C included.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import schedule
from bench.chaos.checker import Fault, History, Params, Sample, check
from bench.chaos.kube import FENCE_S, HOLD_MAX_S, KubeBed, daemonless
from bench.chaos.prober import read_record
from bench.common import (
    REPO,
    Host,
    Pinger,
    Proc,
    SidecarNode,
    Topology,
    bench_topology,
    memory_kib,
    wait_for,
)
from vip_sidecar.status_client import request

VHID = 9
PASSWORD = "chaospw"
ADVBASE = 1
DEADRATIO = 3
SKEWS = (0, 50, 100)
SURVIVOR = "n3"  # never restarted: its RSS is followed over the whole run (invariant e)
STATUS_EVERY_S = 0.5
RSS_EVERY_S = 5.0
SHUTDOWN_TIMEOUT_S = 5.0

# the `up` of the script provider: fails half the time while the node's flag file exists
FAILUP_SCRIPT = """
[ -e "{flag}" ] || exit 0
n=$(od -An -N1 -tu1 /dev/urandom)
[ "$n" -lt 128 ] && exit 1
exit 0
"""


def params(fenced: bool = False) -> Params:
    worst = max(SKEWS) / 256
    return Params(
        advert_interval_s=ADVBASE + worst,
        dead_interval_s=DEADRATIO * ADVBASE + worst,
        fenced=fenced,
        fence_s=FENCE_S if fenced else 0.0,
    )


@dataclass
class Node:
    name: str
    host: Host
    skew: int
    config: Path
    flag: Path
    proc: SidecarNode | None = None
    expected_down: bool = False
    lives: list[list[tuple[float, int]]] = field(default_factory=list)
    busy: bool = False


class ChaosBed:
    def __init__(
        self, topo: Topology, log: Callable[[str], None], kube: KubeBed | None = None
    ) -> None:
        self.topo = topo
        self.log = log
        self.kube = kube
        self.vip = topo.vip()
        self.lock = threading.RLock()
        self.nodes: dict[str, Node] = {}
        for i, skew in enumerate(SKEWS):
            name = f"n{i + 1}"
            host = topo.hosts[i]
            flag = topo.workdir / f"failup-{name}"
            up = topo.write_script(f"up-{name}.sh", FAILUP_SCRIPT.format(flag=flag))
            cfg = topo.workdir / f"{name}.json"
            doc: dict[str, Any] = {
                "vhid": VHID,
                "pass": PASSWORD,
                "addr": self.vip,
                "advbase": ADVBASE,
                "advskew": skew,
                "deadratio": DEADRATIO,
                "shutdown_timeout": SHUTDOWN_TIMEOUT_S,
                "providers": [
                    "alias",
                    {"name": "script", "upscript": up, "fail_on_error": True},
                ],
            }
            if kube is not None:
                # the fence first: nothing is claimed before the Lease is ours
                doc["providers"].insert(0, kube.provider())
                doc["provider_hold_max_s"] = HOLD_MAX_S
            cfg.write_text(json.dumps(doc))
            self.nodes[name] = Node(name, host, skew, cfg, flag)
        self.prober_host = topo.hosts[3]
        self.by_mac = {n.host.mac: n.name for n in self.nodes.values()}
        self.deaths: list[tuple[str, float, int | None]] = []
        self.leftovers: list[tuple[str, float]] = []
        self.statuses: list[tuple[float, str, str | None]] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- processes ---------------------------------------------------------------------
    def start(self, node: Node) -> None:
        with self.lock:
            env = self.kube.env(node.name) if self.kube else None
            node.proc = self.topo.sidecar(
                node.host, "--config", str(node.config), name=node.name, env=env
            )
            node.lives.append([])
            node.expected_down = False

    def start_all(self) -> None:
        for node in self.nodes.values():
            self.start(node)
        wait_for(lambda: len(self.owners_now()) == 1, 20, 0.1, "one owner at start-up")

    def start_prober(self, out: Path) -> tuple[Proc, Pinger]:
        h = self.prober_host
        prober = Proc(
            h,
            [sys.executable, "-m", "bench.chaos.prober", h.ifname, h.ip, self.vip, str(out)],
            self.topo.workdir / "prober.log",
            env={"PYTHONPATH": str(REPO)},
        )
        self.topo.procs.append(prober)
        return prober, Pinger(self.topo, h, self.vip)

    def owners_now(self) -> list[str]:
        return [n.name for n in self.nodes.values() if n.host.has_address(self.vip)]

    def master(self) -> str | None:
        """The node whose daemon says MASTER (status socket), else whoever holds the VIP."""
        for n in self.nodes.values():
            if n.proc is not None and not n.expected_down and n.proc.state() == "MASTER":
                return n.name
        owners = self.owners_now()
        return owners[0] if owners else None

    # -- the watcher thread: status, liveness, RSS ----------------------------------
    def watch(self) -> None:
        last_state: dict[str, str | None] = {}
        last_rss = 0.0
        while not self._stop.wait(STATUS_EVERY_S):
            now = time.time()
            sample_rss = now - last_rss >= RSS_EVERY_S
            if sample_rss:
                last_rss = now
            for node in self.nodes.values():
                with self.lock:
                    proc = node.proc
                    if proc is None or node.expected_down:
                        continue
                    if not proc.alive():
                        rc = proc.popen.returncode
                        self.deaths.append((node.name, now, rc))
                        self.log(f"!! {node.name} died unscheduled (exit {rc}); restarting")
                        self.start(node)
                        continue
                    if sample_rss:
                        node.lives[-1].append((now, memory_kib([proc.pid])[0]))
                state = proc.state()
                if state != last_state.get(node.name):
                    last_state[node.name] = state
                    self.statuses.append((now, node.name, state))

    def start_watcher(self) -> None:
        t = threading.Thread(target=self.watch, daemon=True)
        t.start()
        self._threads.append(t)

    def stop_watcher(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(5)

    # -- faults ------------------------------------------------------------------------
    def resolve(self, p: schedule.Planned) -> Node | None:
        """The node a planned fault hits: the master for most kinds (the interesting
        case), a random one otherwise; never a busy node, never the survivor for restarts."""
        with self.lock:
            free = [n for n in self.nodes.values() if not n.busy and not n.expected_down]
            if p.kind in schedule.RESTARTS:
                free = [n for n in free if n.name != SURVIVOR]
            if not free:
                return None
            master = self.master()
            if p.kind in ("vipdel", "failup") or p.pick < 0.6:
                chosen = [n for n in free if n.name == master]
                if chosen:
                    return chosen[0]
            return free[int(p.pick * 1000) % len(free)]

    def begin(self, p: schedule.Planned, node: Node | None) -> None:
        if node is None:
            assert self.kube is not None
            return self.kube.begin(p.kind)
        node.busy = True
        h = node.host
        if p.kind == "kill9":
            with self.lock:
                node.expected_down = True
                assert node.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.proc.pid, signal.SIGKILL)
        elif p.kind == "sigterm":
            with self.lock:
                node.expected_down = True
            assert node.proc is not None
            proc = node.proc
            proc.signal(signal.SIGTERM)
            t = threading.Thread(target=self._after_sigterm, args=(node, proc), daemon=True)
            t.start()
            self._threads.append(t)
            node.sigterm_wait = t  # type: ignore[attr-defined]
        elif p.kind == "linkdown":
            h.run("ip", "link", "set", h.ifname, "down")
        elif p.kind == "sigstop":
            assert node.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGSTOP)
        elif p.kind == "partition":
            self.partition(node)
        elif p.kind == "loss":
            self.topo.carp_loss(30)
        elif p.kind == "vipdel":
            h.run("ip", "addr", "del", f"{self.vip}/32", "dev", h.ifname, check=False)
        elif p.kind == "failup":
            for n in self.nodes.values():
                n.flag.touch()
            # provoke an `up` elsewhere: a planned demotion of the master
            if node.proc is not None:
                with contextlib.suppress(OSError, ValueError):
                    request(node.proc.socket, None, "POST", "/v1/vips/all/demote?hold=2", 2.0)

    def finish(self, p: schedule.Planned, node: Node | None) -> None:
        if node is None:
            assert self.kube is not None
            return self.kube.finish(p.kind)
        try:
            self._heal(p, node)
        finally:
            node.busy = False

    def _heal(self, p: schedule.Planned, node: Node) -> None:
        h = node.host
        if p.kind == "kill9":
            assert node.proc is not None
            with contextlib.suppress(Exception):
                node.proc.wait(5)
            self.start(node)
        elif p.kind == "sigterm":
            node.sigterm_wait.join(SHUTDOWN_TIMEOUT_S + 5)  # type: ignore[attr-defined]
            self.start(node)
        elif p.kind == "linkdown":
            h.run("ip", "link", "set", h.ifname, "up")
        elif p.kind == "sigstop":
            assert node.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.proc.pid, signal.SIGCONT)
        elif p.kind == "partition":
            self.topo.hub_run("nft", "delete", "table", "bridge", "chaospart", check=False)
        elif p.kind == "loss":
            self.topo.carp_loss(0)
        elif p.kind == "failup":
            for n in self.nodes.values():
                n.flag.unlink(missing_ok=True)

    def _after_sigterm(self, node: Node, proc: SidecarNode) -> None:
        try:
            proc.wait(SHUTDOWN_TIMEOUT_S + 5)
        except Exception:
            self.deaths.append((node.name, time.time(), None))
            self.log(f"!! {node.name} did not exit on SIGTERM; killing it")
            proc.stop()
        else:
            if proc.popen.returncode != 0:
                self.log(f"!! {node.name} exited {proc.popen.returncode} on SIGTERM")
                self.deaths.append((node.name, time.time(), proc.popen.returncode))
        if node.host.has_address(self.vip):
            self.leftovers.append((node.name, time.time()))
            self.log(f"!! VIP left on {node.name} after SIGTERM")

    def partition(self, node: Node) -> None:
        """Drop protocol 112 from and to this node's bridge port: the others stop hearing
        it and it stops hearing them, while the prober still reaches everyone (the split
        brain is visible from outside)."""
        port = self.topo.port_of(node.host)
        hub = self.topo.hub_run
        hub("nft", "add", "table", "bridge", "chaospart")
        hub("nft", "add", "chain", "bridge", "chaospart", "cpfwd",
            "{ type filter hook forward priority -5; }")  # fmt: skip
        for side in ("iifname", "oifname"):
            hub("nft", "add", "rule", "bridge", "chaospart", "cpfwd", side, port,
                "ip", "protocol", "112", "drop")  # fmt: skip

    # -- logs --------------------------------------------------------------------------
    def tracebacks(self) -> list[tuple[str, str]]:
        out = []
        for node in self.nodes.values():
            if node.proc is None:
                continue
            for line in node.proc.text().splitlines():
                if "Traceback" in line:
                    out.append((node.name, line[:300]))
                    break
        return out


PING_GAP_S = 0.05


def run(
    minutes: float,
    seed: int,
    log: Callable[[str], None] = print,
    keep_logs: str | None = None,
    kubernetes: bool = False,
) -> dict[str, Any]:
    par = params(fenced=kubernetes)
    kinds = {**schedule.KINDS, **(schedule.API_KINDS if kubernetes else {})}
    plan = schedule.plan(seed, minutes * 60, par.recovery_deadline_s, kinds=kinds)
    log(f"chaos: seed {seed}, {minutes:g} min, {len(plan)} faults planned")
    with bench_topology(4) as topo, contextlib.ExitStack() as stack:
        kube = None
        if kubernetes:
            kube = KubeBed(topo, [f"n{i + 1}" for i in range(len(SKEWS))], log)
            stack.callback(kube.stop)  # before the topology goes: its root leg carries it
        bed = ChaosBed(topo, log, kube)
        arp_out = topo.workdir / "arp.txt"
        bed.start_all()
        prober, pinger = bed.start_prober(arp_out)
        wait_for(lambda: arp_out.exists() and arp_out.stat().st_size > 0, 10, 0.1, "prober")
        bed.start_watcher()
        t0 = time.time()
        # (time, order, start?, planned): at the same instant ends go before starts, except
        # the end of an instantaneous fault, which must follow its own start
        actions = sorted(
            [(t0 + p.at, 1, True, p) for p in plan]
            + [(t0 + p.at + p.duration, 2 if p.duration == 0 else 0, False, p) for p in plan],
            key=lambda a: (a[0], a[1]),
        )
        faults: dict[int, Fault] = {}
        targets: dict[int, Node | None] = {}
        skipped: list[int] = []
        bed_errors: list[str] = []
        for when, _, is_start, p in actions:
            delay = when - time.time()
            if delay > 0:
                time.sleep(delay)
            if is_start:
                node = None if p.kind in schedule.API_KINDS else bed.resolve(p)
                if node is None and p.kind not in schedule.API_KINDS:
                    skipped.append(p.id)
                    log(f"  skip fault {p.id} {p.kind}: no free node")
                    continue
                targets[p.id] = node
                now = time.time()
                where = node.name if node else "apiserver"
                faults[p.id] = Fault(p.kind, where, now, now, p.id)
                try:
                    bed.begin(p, node)
                except (RuntimeError, OSError, AssertionError) as exc:
                    bed_errors.append(f"fault {p.id} {p.kind} start: {exc}")
                    log(f"!! bed error: {bed_errors[-1]}")
                log(f"  t={now - t0:7.2f} +{p.kind} #{p.id} on {where} ({p.duration:.1f} s)")
            elif p.id in targets:
                try:
                    bed.finish(p, targets[p.id])
                except (RuntimeError, OSError, AssertionError) as exc:
                    bed_errors.append(f"fault {p.id} {p.kind} end: {exc}")
                    log(f"!! bed error: {bed_errors[-1]}")
                faults[p.id].end = time.time()
                log(f"  t={faults[p.id].end - t0:7.2f} -{p.kind} #{p.id} on {faults[p.id].node}")
        time.sleep(max(0.0, t0 + minutes * 60 - time.time()))
        end = time.time()
        bed.stop_watcher()
        prober.signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            prober.wait(5)
        replies = pinger.stop()
        samples = [
            Sample(t, frozenset(bed.by_mac.get(m, m) for m in macs))
            for t, macs in read_record(arp_out)
            if t <= end
        ]
        ordered = sorted(faults.values(), key=lambda f: f.id)
        history = History(
            samples=samples,
            faults=ordered,
            nodes=list(bed.nodes),
            end=end,
            unscheduled_deaths=bed.deaths,
            tracebacks=bed.tracebacks(),
            sigterm_leftovers=bed.leftovers,
            rss={n.name: n.lives for n in bed.nodes.values()},
            daemonless=daemonless(ordered, {n.name: n.proc for n in bed.nodes.values()}),
        )
        result = check(history, par)
        gaps = [b - a for (a, _), (b, _) in itertools.pairwise(replies)]
        result.update(
            seed=seed,
            minutes=minutes,
            kubernetes=kubernetes,
            daemonless=history.daemonless,
            t0=t0,
            end=end,
            skipped=skipped,
            bed_errors=bed_errors,
            params={**par.__dict__},
            ping={
                "replies": len(replies),
                "gap_max_s": max(gaps, default=float("nan")),
                "outage_s": sum(g for g in gaps if g > PING_GAP_S),
            },
            statuses=bed.statuses,
            rss={n.name: n.lives for n in bed.nodes.values()},
        )
        if keep_logs:
            dest = Path(keep_logs)
            dest.mkdir(parents=True, exist_ok=True)
            for f in topo.workdir.iterdir():
                if f.is_file() and re.search(r"\.(log|txt|json|sh)$", f.name):
                    shutil.copy2(f, dest / f.name)
        return result
