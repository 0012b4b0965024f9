"""IPv6 next to IPv4: vip-sidecar's kill -9 failover for an IPv6 VIP and an IPv4 VIP on
the same dual-stack hosts in one run (issue 12).

The run is failover.py's kill9 scenario (h1 master, h2 backup at advskew 50, h3 pings the
VIP every 10 ms; h1's link down and its daemon SIGKILLed at t0, at a seeded random phase
of the advert cycle), once with a VIP of each family per round, the families interleaved
round by round with the same phase. IPv6: srcip = each host's fd00:<net>::<i>, adverts to
ff02::12, the VIP added without DAD and announced with unsolicited neighbour adverts,
`ping -6`. Printed: the table per family and the ratios IPv6/IPv4.

    python -m bench.ipv6 [--quick] [--runs 10] [--seed 1] [--json out.json]
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/ipv6.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    BACKUP_SKEW,
    base_parser,
    bench_topology,
    dead_interval,
    print_header,
    print_ratios,
    ratio,
    write_json,
)
from bench.failover import METRICS, one_run, summarise, summary_table

FAMILIES = ("ipv4", "ipv6")
LABEL = {"ipv4": "vip-sidecar IPv4", "ipv6": "vip-sidecar IPv6"}


def report(summary: dict[str, dict[str, float]]) -> None:
    dead = dead_interval(1, BACKUP_SKEW)
    print(
        "\nFailover on node death, IPv4 and IPv6 VIPs on the same hosts (kill -9 + link "
        f"down of the master), advbase 1, nominal dead interval {dead:.3f} s"
    )
    print(summary_table(summary, "kill9", first="VIP"))
    v4, v6 = summary[LABEL["ipv4"]], summary[LABEL["ipv6"]]
    items = [
        (
            f"vip-sidecar IPv6/IPv4 {label} {'median' if stat == 'p50' else 'max'}",
            ratio(v6[f"{key}_{stat}"], v4[f"{key}_{stat}"]),
        )
        for key, label in METRICS["kill9"]
        for stat in ("p50", "max")
    ]
    print_ratios("kill9", items)


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, help="runs per family (default 10; quick 1)")
    p.add_argument("--seed", type=int, default=1, help="seed of the random event phases")
    args = p.parse_args(argv)
    runs = args.runs or (1 if args.quick else 10)
    info = print_header(
        "ipv6",
        [sys.executable, "-m", "bench.ipv6", *(argv if argv is not None else sys.argv[1:])],
    )
    results: list[dict[str, Any]] = []
    out: dict[str, Any] = {"machine": info, "runs": runs, "results": results}
    rng = random.Random(args.seed)
    with bench_topology(3, family="dual") as topo:
        for i in range(runs):
            phase = rng.uniform(0.0, 1.0)
            for family in FAMILIES:
                # a failed run (shown and counted in "fail") is retried once
                for attempt in range(2):
                    r = one_run(topo, "vip-sidecar", "kill9", phase, family=family)
                    r.update(run=i, family=family, kind=LABEL[family])
                    results.append(r)
                    shown = (
                        ", ".join(f"{label} {r[key]:.3f} s" for key, label in METRICS["kill9"])
                        + f", lost echoes {r['lost']}"
                        if r["ok"]
                        else f"FAILED (attempt {attempt + 1}): {r.get('error')}"
                    )
                    print(f"  kill9 run {i + 1}/{runs} {family}: {shown}", flush=True)
                    if r["ok"]:
                        break
    summary = summarise(results, "kill9", tuple(LABEL.values()))
    out["summary_kill9"] = summary
    report(summary)
    write_json(args.json, out)
    empty = [f for f in FAMILIES if not any(r["ok"] for r in results if r["family"] == f)]
    for family in empty:
        print(f"bench: no {family} run completed", file=sys.stderr)
    return 1 if empty else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
