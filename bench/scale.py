"""Scale: one vip-sidecar process holding N VHIDs vs N ucarp processes (one VHID each).

h1 is master of every VHID (advskew 0), h2 backup of every VHID (advskew 50), h3
captures the adverts with tcpdump (kernel time stamps). One VIP per VHID, added by the
alias provider (vip-sidecar) or by the classic up/down scripts (ucarp). After the roles
settle, for a window of W seconds:

* CPU% (of one core) and RSS of the master side and of the backup side (every process);
* advertisement jitter on the wire: for each VHID the intervals between consecutive
  adverts from h1, interval error = interval - (advbase + advskew/256); p50/p99/max of
  |error| over all VHIDs, the mean signed error, and intervals over 1.5x nominal;
* vip-sidecar's own view: /status `advert_lateness_s` (timer lateness at send time),
  median of the per-VIP p50 and max of the per-VIP p99;
* spurious takeovers: backups that became MASTER during the window (must be 0);
* start-up: the longest advert interval of any VHID between its first advert and the
  window (the capture runs from before the daemons start): stalls right after the
  takeover of N VIPs at once show here.

vip-sidecar runs twice per N: with the alias provider's defaults, and with its periodic
re-check of the address (`reassert_interval`, 5 s per VIP) pushed to 3600 s, which
separates the cost of the advert path from the cost of that check.

    python -m bench.scale [--quick] [--n 1,16,64,255] [--window 30] [--ucarp-max 255]
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/scale.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ADVBASE,
    BACKUP_SKEW,
    MASTER_SKEW,
    PASSWORD,
    Capture,
    Host,
    Topology,
    UcarpNode,
    base_parser,
    bench_topology,
    fmt,
    measure_usage,
    percentile,
    print_header,
    print_ratios,
    ratio,
    require_tools,
    table,
    tree_pids,
    ucarp_scripts,
    wait_for,
    write_json,
)
from testbed.harness import SidecarNode
from vip_sidecar.status_client import fetch_status

NOMINAL = ADVBASE + MASTER_SKEW / 256
# the alias provider re-reads the interface's addresses every reassert_interval (5 s) per
# VIP; "reassert off" (3600 s) isolates the advert path from that periodic check
KINDS = ("vip-sidecar", "vip-sidecar (reassert off)", "ucarp")


def vip_addr(topo: Topology, vhid: int) -> str:
    """VIPs outside the hosts' /24 (10.<net>.1.x, 10.<net>.2.x): 255 of them fit."""
    return f"10.{topo.net}.{1 + (vhid - 1) // 200}.{(vhid - 1) % 200 + 1}"


def clean(topo: Topology) -> None:
    for h in topo.hosts[:2]:
        out = h.run("ip", "-o", "-4", "addr", "show", "dev", h.ifname).stdout
        for line in out.splitlines():
            parts = line.split()
            addr = parts[parts.index("inet") + 1]
            if addr.endswith("/32"):
                h.run("ip", "addr", "del", addr, "dev", h.ifname, check=False)


def vip_count(host: Host) -> int:
    return sum(a.endswith("/32") for a in host.addresses())


class OursSide:
    def __init__(
        self, topo: Topology, host: Host, n: int, advskew: int, tag: str, reassert: bool = True
    ) -> None:
        cfg = topo.workdir / f"scale-{tag}-{n}-{int(reassert)}.json"
        alias: Any = "alias" if reassert else {"name": "alias", "reassert_interval": 3600}
        cfg.write_text(
            json.dumps(
                {
                    "vips": [
                        {"name": f"v{i}", "vhid": i, "addr": vip_addr(topo, i),
                         "providers": [alias]}
                        for i in range(1, n + 1)
                    ]
                }
            )
        )  # fmt: skip
        self.node: SidecarNode = topo.sidecar(
            host, "--config", str(cfg), "-p", PASSWORD, "-b", str(ADVBASE), "-k", str(advskew),
            name=f"scale-{tag}-{n}",
        )  # fmt: skip

    def states(self) -> list[str]:
        st = self.node.status()
        return [v["state"] for v in st["vips"]] if st else []

    def pids(self) -> list[int]:
        return tree_pids(self.node.pid)

    def masters_since(self, t: float) -> int:
        return sum(1 for ts, new, _ in self.node.transitions() if new == "MASTER" and ts >= t)

    def lateness(self) -> dict[str, float]:
        """Per-VIP advert_lateness_s from /status, and how long /status took to answer."""
        t0 = time.monotonic()
        try:
            st = fetch_status(self.node.socket, None, timeout=10.0)
        except (OSError, ValueError):
            st = {"vips": []}
        took = time.monotonic() - t0
        lat = [v["counters"]["advert_lateness_s"] for v in st["vips"]]
        p50s = [x["p50"] for x in lat if x]
        p99s = [x["p99"] for x in lat if x]
        return {
            "p50": statistics.median(p50s) if p50s else math.nan,
            "p99": max(p99s) if p99s else math.nan,
            "status_s": took,
        }

    def stop(self) -> None:
        self.node.stop()


class UcarpSide:
    def __init__(self, topo: Topology, host: Host, n: int, advskew: int, tag: str) -> None:
        up, down = ucarp_scripts(topo)
        self.nodes: list[UcarpNode] = [
            topo.ucarp(
                host,
                "-v",
                str(i),
                "-p",
                PASSWORD,
                "-a",
                vip_addr(topo, i),
                "-b",
                str(ADVBASE),
                "-k",
                str(advskew),
                "-u",
                up,
                "-d",
                down,
                "-z",
                name=f"scale-{tag}-{n}-{i}",
            )
            for i in range(1, n + 1)
        ]

    def states(self) -> list[str]:
        return [n.state() or "INIT" for n in self.nodes]

    def pids(self) -> list[int]:
        return list(itertools.chain.from_iterable(tree_pids(n.pid) for n in self.nodes))

    def masters_since(self, t: float) -> int:
        return sum(1 for n in self.nodes if n.became("MASTER", after=t) is not None)

    def lateness(self) -> dict[str, float]:
        return {"p50": math.nan, "p99": math.nan, "status_s": math.nan}

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


def jitter(adverts: list[Any], src: str, start: float, end: float) -> dict[str, float]:
    by_vhid: dict[int, list[float]] = {}
    for a in adverts:
        if a.src == src and start <= a.ts <= end:
            by_vhid.setdefault(a.vhid, []).append(a.ts)
    errors = []
    for times in by_vhid.values():
        errors += [(b - a) - NOMINAL for a, b in itertools.pairwise(times)]
    absolute = [abs(e) for e in errors]
    return {
        "vhids_seen": len(by_vhid),
        "intervals": len(errors),
        "p50_ms": percentile(absolute, 50) * 1000,
        "p99_ms": percentile(absolute, 99) * 1000,
        "max_ms": max(absolute, default=math.nan) * 1000,
        "mean_signed_ms": (statistics.fmean(errors) * 1000) if errors else math.nan,
        "over_1_5x": sum(1 for e in errors if e > 0.5 * NOMINAL),
    }


def max_interval(adverts: list[Any], src: str, start: float, end: float) -> float:
    by_vhid: dict[int, list[float]] = {}
    for a in adverts:
        if a.src == src and start <= a.ts <= end:
            by_vhid.setdefault(a.vhid, []).append(a.ts)
    gaps = [b - a for t in by_vhid.values() for a, b in itertools.pairwise(t)]
    return max(gaps, default=math.nan)


def run_one(topo: Topology, kind: str, n: int, window: float) -> dict[str, Any]:
    h1, h2, h3 = topo.hosts[:3]
    clean(topo)
    master: OursSide | UcarpSide | None = None
    backup: OursSide | UcarpSide | None = None
    cap: Capture | None = None

    def side(host: Host, advskew: int, tag: str) -> OursSide | UcarpSide:
        if kind == "ucarp":
            return UcarpSide(topo, host, n, advskew, tag)
        return OursSide(topo, host, n, advskew, tag, reassert=kind == "vip-sidecar")

    t_start = time.time()
    try:
        cap = Capture(topo, h3)  # from the start: the start-up phase is reported too
        master = side(h1, MASTER_SKEW, "m")
        # the backup starts once h1 is master of everything: without preempt, a backup
        # whose process happened to come up first would keep what it took
        wait_for(
            lambda: master.states().count("MASTER") == n,
            30 + n / 5,
            interval=0.5,
            what=f"{kind} x{n}: h1 master of every VHID",
        )
        backup = side(h2, BACKUP_SKEW, "b")
        wait_for(
            lambda: (
                master.states().count("MASTER") == n
                and backup.states().count("BACKUP") == n
                and vip_count(h1) == n
                and vip_count(h2) == 0
            ),
            30 + n / 5,
            interval=0.5,
            what=f"{kind} x{n}: h1 master and h2 backup of every VHID",
        )
        settled = time.time()
        time.sleep(2.0)
        start = time.time()
        usage = measure_usage({"master": master.pids, "backup": backup.pids}, window)
        end = time.time()
        cap.stop()
        adverts = cap.adverts()
        spurious = backup.masters_since(start)
        still = master.states().count("MASTER")
        return {
            "ok": True,
            "kind": kind,
            "n": n,
            "master": vars(usage["master"]),
            "backup": vars(usage["backup"]),
            "wire": jitter(adverts, h1.ip, start, end),
            # the longest advert interval of any VHID from its first advert to the window
            "startup_max_interval_s": max_interval(adverts, h1.ip, 0.0, start),
            "settle_s": settled - t_start,
            "lateness": master.lateness(),
            "spurious_takeovers": spurious,
            "masters_at_end": still,
        }
    except (AssertionError, RuntimeError) as exc:
        return {"ok": False, "kind": kind, "n": n, "error": str(exc)}
    finally:
        if cap is not None:
            cap.stop()
        for s in (master, backup):
            if s is not None:
                s.stop()


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", help="VHID counts (default 1,16,64,255; quick 1,16)")
    p.add_argument("--window", type=float, help="seconds measured per N (30; quick 4)")
    p.add_argument(
        "--ucarp-max", type=int, default=255, help="largest N to try with ucarp processes"
    )
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset")
    args = p.parse_args(argv)
    ns = [int(x) for x in (args.n or ("1,16" if args.quick else "1,16,64,255")).split(",")]
    window = args.window or (4.0 if args.quick else 30.0)
    require_tools("ucarp", "tcpdump")
    info = print_header(
        "scale",
        [sys.executable, "-m", "bench.scale", *(argv if argv is not None else sys.argv[1:])],
    )
    results: list[dict[str, Any]] = []
    with bench_topology(3) as topo:
        for n in ns:
            for kind in [k for k in args.kinds.split(",") if k]:
                if kind == "ucarp" and n > args.ucarp_max:
                    continue
                r = run_one(topo, kind, n, window)
                results.append(r)
                if r["ok"]:
                    shown = (
                        f"master CPU {r['master']['cpu_pct']:.2f}%, backup CPU "
                        f"{r['backup']['cpu_pct']:.2f}%, jitter p50 {r['wire']['p50_ms']:.2f} "
                        f"ms p99 {r['wire']['p99_ms']:.2f} ms, spurious takeovers "
                        f"{r['spurious_takeovers']}"
                    )
                else:
                    shown = f"FAILED: {r['error']}"
                print(f"  N={n} {kind}: {shown}", flush=True)
    report(results, window)
    write_json(args.json, {"machine": info, "window_s": window, "results": results})
    return 0 if all(r["ok"] for r in results) else 1


def report(results: list[dict[str, Any]], window: float) -> None:
    print(
        f"\nScale over {window:g} s per N: h1 master / h2 backup of N VHIDs, advbase 1 "
        "(CPU% of one core; jitter = |advert interval - 1 s| on the wire)"
    )
    heads = (
        "N", "daemon", "procs/side", "CPU master", "CPU backup", "RSS master", "RSS backup",
        "jitter p50", "p99", "max", "mean err", ">1.5x", "lateness p50/p99 (status)",
        "/status took", "spurious", "start-up max interval",
    )  # fmt: skip
    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["n"], r["kind"], "FAILED", *[""] * (len(heads) - 3)])
            continue
        m, b, w, lat = r["master"], r["backup"], r["wire"], r["lateness"]
        rows.append(
            [
                r["n"],
                r["kind"],
                m["nprocs"],
                fmt(m["cpu_pct"], " %", 2),
                fmt(b["cpu_pct"], " %", 2),
                fmt(m["rss_kib"] / 1024, " MiB", 1),
                fmt(b["rss_kib"] / 1024, " MiB", 1),
                fmt(w["p50_ms"], " ms", 2),
                fmt(w["p99_ms"], " ms", 2),
                fmt(w["max_ms"], " ms", 1),
                fmt(w["mean_signed_ms"], " ms", 2),
                w["over_1_5x"],
                f"{fmt(lat['p50'] * 1000, '', 2)}/{fmt(lat['p99'] * 1000, ' ms', 2)}",
                fmt(lat["status_s"] * 1000, " ms", 0),
                r["spurious_takeovers"],
                fmt(r.get("startup_max_interval_s", math.nan), " s", 2),
            ]
        )
    print(table(heads, rows))
    items = []
    by = {(r["kind"], r["n"]): r for r in results if r["ok"]}
    for n in sorted({r["n"] for r in results}):
        uc = by.get(("ucarp", n))
        for kind in KINDS[:2]:
            ours = by.get((kind, n))
            if not (ours and uc):
                continue
            label = f"N={n} {kind}/ucarp"
            items += [
                (f"{label} CPU master", ratio(ours["master"]["cpu_pct"], uc["master"]["cpu_pct"])),
                (f"{label} CPU backup", ratio(ours["backup"]["cpu_pct"], uc["backup"]["cpu_pct"])),
                (f"{label} RSS master", ratio(ours["master"]["rss_kib"], uc["master"]["rss_kib"])),
                (f"{label} jitter p99", ratio(ours["wire"]["p99_ms"], uc["wire"]["p99_ms"])),
            ]
    print_ratios("scale", items)


if __name__ == "__main__":
    sys.exit(main())
