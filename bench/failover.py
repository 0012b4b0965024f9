"""Failover time: kill -9 (node death) and SIGTERM (planned) of the master.

Three hosts on one bridge: h1 master (advskew 0 / keepalived priority 250), h2 backup
(advskew 50 / keepalived priority 206: the same nominal dead interval 3 + 50/256 s),
h3 pings the VIP every 10 ms (`ping -D -i 0.01`). For every run the pair is started
fresh, then:

* kill9: h1's link is set down and its daemon's whole process group gets SIGKILL at the
  same instant t0 (a dead node: no stale VIP answering, no goodbye packet);
* sigterm: the master daemon gets SIGTERM at t0 (ucarp runs with -z so its down script
  removes the VIP; vip-sidecar sends a bow-out advert; keepalived a priority-0 advert).

Measured per run: takeover = the backup's MASTER timestamp (its own log, or the
keepalived notify script) - t0; outage = first echo reply after t0 from the new owner
- t0 (kill9), and the longest gap between two consecutive echo replies around t0 with
the number of lost echoes (both scenarios). Kinds are interleaved run by run.

    python -m bench.failover [--quick] [--runs 10] [--scenario kill9|sigterm|both]
"""

from __future__ import annotations

import itertools
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/failover.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BACKUP_SKEW,
    KINDS,
    NORMAL_TIMERS,
    Capture,
    Daemon,
    Pinger,
    Timers,
    Topology,
    base_parser,
    bench_topology,
    dead_interval,
    fmt,
    median,
    print_header,
    print_ratios,
    ratio,
    require_tools,
    start_daemon,
    table,
    wait_for,
    write_json,
)

VHID = 7
SCENARIOS = ("kill9", "sigterm")


def reset(topo: Topology, vip: str) -> None:
    h1, h2, h3 = topo.hosts[:3]
    h1.run("ip", "link", "set", h1.ifname, "up")
    for h in (h1, h2):
        # the alias provider adds an IPv4 VIP as /32, an IPv6 VIP as /128
        prefix = 128 if ":" in vip else 32
        h.run("ip", "addr", "del", f"{vip}/{prefix}", "dev", h.ifname, check=False)
    h3.run("ip", "neigh", "flush", "dev", h3.ifname, check=False)
    wait_for(
        lambda: "LOWER_UP" in h1.run("ip", "link", "show", h1.ifname).stdout, 5, what="h1 carrier"
    )


def one_run(
    topo: Topology,
    kind: str,
    scenario: str,
    phase: float,
    timers: Timers = NORMAL_TIMERS,
    family: str = "ipv4",
) -> dict[str, Any]:
    """family "ipv6" (vip-sidecar only, on a topology with IPv6): the VIP, the srcips,
    the pings and the captured adverts are IPv6; everything else is the same run."""
    h1, h2, h3 = topo.hosts[:3]
    v6 = family == "ipv6"
    vip = topo.vip6() if v6 else topo.vip()
    src1, src2 = ((h.ip6 if v6 else h.ip) for h in (h1, h2))
    reset(topo, vip)
    daemons: list[Daemon] = []
    ping: Pinger | None = None
    cap: Capture | None = None
    result: dict[str, Any] = {"kind": kind, "scenario": scenario, "ok": False}
    try:
        master = start_daemon(
            topo, kind, h1, vhid=VHID, vip=vip, advskew=timers.master_skew, timers=timers,
            srcip=src1,
        )  # fmt: skip
        daemons.append(master)
        wait_for(
            lambda: master.state() == "MASTER" and h1.has_address(vip),
            15,
            what=f"{kind} master on h1",
        )
        cap = Capture(topo, h3, "ip6 proto 112" if v6 else "ip proto 112")
        backup = start_daemon(
            topo, kind, h2, vhid=VHID, vip=vip, advskew=timers.backup_skew, timers=timers,
            srcip=src2,
        )  # fmt: skip
        daemons.append(backup)
        wait_for(lambda: backup.state() == "BACKUP", 10, what=f"{kind} backup on h2")
        time.sleep(1.5)  # the backup has heard adverts: its dead timer runs from the last one
        if master.state() != "MASTER" or h2.has_address(vip):
            raise RuntimeError("pair did not settle with h1 as master")
        ping = Pinger(topo, h3, vip, timers.ping_interval)
        wait_for(lambda: len(ping.replies()) >= 20, 5, what="echo replies before the event")
        # the event lands at a random point of the advert cycle (the same for every kind)
        time.sleep(phase)
        t0 = time.time()
        if scenario == "kill9":
            h1.run("ip", "link", "set", h1.ifname, "down")
            master.kill_group(signal.SIGKILL)
        else:
            master.proc.signal(signal.SIGTERM)
        t_cut = time.time()
        took_at = wait_for(
            lambda: backup.became_master(after=t0 - 0.001), 15, what=f"{kind} backup takes over"
        )
        wait_for(
            lambda: any(ts > max(took_at, t_cut) + 0.3 for ts, _ in ping.replies()),
            15,
            what="echo replies after the takeover",
        )
        replies = ping.stop()
        cap.stop()
        last = [a.ts for a in cap.adverts() if a.src == src1 and a.ts <= t0]
        result.update(analyse(replies, t0, t_cut, took_at, last[-1] if last else math.nan))
        result["ok"] = True
    except (AssertionError, RuntimeError) as exc:
        result["error"] = str(exc)
    finally:
        if ping is not None:
            ping.stop()
        if cap is not None:
            cap.stop()
        for d in daemons:
            d.stop(grace=5.0 if scenario == "sigterm" and d is daemons[0] else 0.0)
    return result


def analyse(
    replies: list[tuple[float, int]], t0: float, t_cut: float, took_at: float, last_advert: float
) -> dict[str, Any]:
    """t0: the event; t_cut: the event's commands returned (h1's link is down by then, so
    every later echo reply comes from the new owner); last_advert: the master's last
    advert seen on the wire before t0 (nan if none was captured)."""
    before = [ts for ts, _ in replies if ts <= t_cut]
    after = [ts for ts, _ in replies if ts > t_cut]
    first = after[0] if after else math.nan
    window = [ts for ts, _ in replies if ts >= t0 - 0.1]
    if before:
        window = [before[-1], *[ts for ts in window if ts > before[-1]]]
    gaps = [b - a for a, b in itertools.pairwise(window)]
    seqs = [seq for ts, seq in replies if ts >= t0 - 0.1]
    return {
        "takeover_s": took_at - t0,
        # phase-independent: how long after the master's last advert the backup took over
        "takeover_after_advert_s": took_at - last_advert,
        "reply_s": first - t0,
        "reply_after_advert_s": first - last_advert,
        "gap_s": max(gaps) if gaps else math.nan,
        "lost": (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else -1,
    }


METRICS = {
    "kill9": (
        ("takeover_s", "takeover"),
        ("takeover_after_advert_s", "takeover after last advert"),
        ("reply_s", "first reply"),
        ("reply_after_advert_s", "first reply after last advert"),
    ),
    "sigterm": (
        ("takeover_s", "takeover"),
        ("gap_s", "reply gap"),
    ),
}


def summarise(
    results: list[dict[str, Any]], scenario: str, kinds: tuple[str, ...]
) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for kind in kinds:
        mine = [r for r in results if r["kind"] == kind and r["scenario"] == scenario]
        ok = [r for r in mine if r["ok"]]
        s: dict[str, float] = {"runs": len(ok), "failed": len(mine) - len(ok)}
        for key, _ in METRICS[scenario]:
            values = [r[key] for r in ok if not math.isnan(r[key])]
            s[f"{key}_p50"] = median(values)
            s[f"{key}_max"] = max(values, default=math.nan)
        s["lost_p50"] = median([float(r["lost"]) for r in ok])
        summary[kind] = s
    return summary


def summary_table(
    summary: dict[str, dict[str, float]], scenario: str, first: str = "daemon"
) -> str:
    """One row per kind: runs, failures, p50 and max of each metric, lost echoes."""
    heads = [first, "runs", "fail"]
    for _, label in METRICS[scenario]:
        heads += [f"{label} p50", "max"]
    heads.append("lost echoes p50")
    rows = []
    for kind, s in summary.items():
        row: list[Any] = [kind, int(s["runs"]), int(s["failed"])]
        for key, _ in METRICS[scenario]:
            row += [fmt(s[f"{key}_p50"], " s"), fmt(s[f"{key}_max"], " s")]
        row.append(fmt(s["lost_p50"], "", 0))
        rows.append(row)
    return table(heads, rows)


def report(summary: dict[str, dict[str, float]], scenario: str) -> None:
    if scenario == "kill9":
        print(
            "\nFailover on node death (kill -9 + link down of the master), advbase 1, "
            f"nominal dead interval {dead_interval(1, BACKUP_SKEW):.3f} s"
        )
    else:
        print("\nPlanned failover (SIGTERM of the master; ucarp -z), advbase 1")
    print(summary_table(summary, scenario))
    ours = summary.get("vip-sidecar")
    if ours is None:
        return
    items = []
    for other in ("ucarp", "keepalived"):
        if other not in summary:
            continue
        o = summary[other]
        for key, label in METRICS[scenario]:
            for stat in ("p50", "max"):
                items.append(
                    (
                        f"vip-sidecar/{other} {label} {'median' if stat == 'p50' else 'max'}",
                        ratio(ours[f"{key}_{stat}"], o[f"{key}_{stat}"]),
                    )
                )
    print_ratios(scenario, items)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, help="runs per daemon and scenario (default 10; quick 1)")
    p.add_argument("--scenario", choices=(*SCENARIOS, "both"), default="both")
    p.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=1, help="seed of the random event phases")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 10)
    scenarios = SCENARIOS if args.scenario == "both" else (args.scenario,)
    kinds = tuple(k for k in args.kinds.split(",") if k)
    require_tools(*(k for k in kinds if k != "vip-sidecar"))
    info = print_header(
        "failover",
        [sys.executable, "-m", "bench.failover", *(argv if argv is not None else sys.argv[1:])],
    )
    results: list[dict[str, Any]] = []
    out: dict[str, Any] = {"machine": info, "runs": runs, "results": results}
    rng = random.Random(args.seed)
    with bench_topology(3) as topo:
        for scenario in scenarios:
            for i in range(runs):
                phase = rng.uniform(0.0, 1.0)
                for kind in kinds:
                    # a failed run (shown and counted in "fail") is retried once
                    for attempt in range(2):
                        r = one_run(topo, kind, scenario, phase)
                        r["run"] = i
                        results.append(r)
                        shown = (
                            ", ".join(f"{label} {r[key]:.3f} s" for key, label in METRICS[scenario])
                            + f", lost echoes {r['lost']}"
                            if r["ok"]
                            else f"FAILED (attempt {attempt + 1}): {r.get('error')}"
                        )
                        print(f"  {scenario} run {i + 1}/{runs} {kind}: {shown}", flush=True)
                        if r["ok"]:
                            break
            summary = summarise(results, scenario, kinds)
            out[f"summary_{scenario}"] = summary
            report(summary, scenario)
    write_json(args.json, out)
    # fail only if some daemon never completed a run of a scenario
    empty = [
        (sc, k)
        for sc in scenarios
        for k in kinds
        if not any(r["ok"] for r in results if r["kind"] == k and r["scenario"] == sc)
    ]
    for sc, k in empty:
        print(f"bench: {k} completed no {sc} run", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
