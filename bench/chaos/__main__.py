"""Chaos soak: `python -m bench.chaos --minutes N --seed S --json FILE`.

Three vip-sidecar nodes (alias provider, plus a script provider with fail_on_error) and a
prober host in network namespaces; a seeded random schedule of faults (kill -9 and
SIGTERM with restart, link down, SIGSTOP, a partition, 30 % advert loss, the VIP deleted
by hand, a failing `up`); an outside checker judges what the prober saw. With
`--kubernetes` every node also holds the VIP's Lease on a real kube-apiserver (the fence),
which is stopped and killed at random too, and invariant (c) holds: never two owners,
partitions included. Exit status 1 on any violation, 2 when the bed cannot run.
docs/reliability.md has the 30-minute runs and how to replay a failing seed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import print_header, require_tools


def summary(result: dict[str, Any]) -> str:
    rec = result["recovery_s"]
    lines = [
        f"faults: {len(result['faults'])} (skipped {len(result['skipped'])}), "
        f"zero_owner_s {result['zero_owner_s']:.3f}, multi_owner_s {result['multi_owner_s']:.3f} "
        f"({result['daemonless_multi_owner_s']:.3f} of it a kill -9'd node's address), "
        f"unobserved_s {result['unobserved_s']:.3f}",
        f"recovery_s over {rec['n']} judged fault ends: p50 {rec['p50']:.3f}, "
        f"p99 {rec['p99']:.3f}, max {rec['max']:.3f}, never {rec['never']}",
        f"ping: {result['ping']['replies']} replies, "
        f"longest gap {result['ping']['gap_max_s']:.3f} s",
        f"RSS growth (KiB): {result['rss_growth_kib']}",
        f"violations: {len(result['violations'])}",
    ]
    lines += [f"  ({v['invariant']}) {v['what']}" for v in result["violations"]]
    return "\n".join(lines)


def _finite(obj: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write the history, figures and violations")
    p.add_argument("--logs", metavar="DIR", help="keep the daemon and prober logs here")
    p.add_argument(
        "--kubernetes",
        action="store_true",
        help="every node holds the VIP's Lease on a real kube-apiserver (tests/k8s/build.sh "
        "builds it), which is stopped and killed at random too",
    )
    args = p.parse_args(argv)
    require_tools("nft")
    if args.kubernetes:
        from testbed.controlplane import ControlPlaneError, binaries

        try:
            binaries()
        except ControlPlaneError as exc:
            print(f"bench.chaos: --kubernetes: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 2
    info = print_header(
        "chaos",
        [sys.executable, "-m", "bench.chaos", *(argv if argv is not None else sys.argv[1:])],
    )
    from bench.chaos.runner import run

    result = run(args.minutes, args.seed, keep_logs=args.logs, kubernetes=args.kubernetes)
    result["machine"] = info
    print(summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(_finite(result), indent=1))
    # a fault the bed failed to inject or heal makes the run worthless: fail it too
    for err in result["bed_errors"]:
        print(f"bed error: {err}", file=sys.stderr)
    return 1 if result["violations"] or result["bed_errors"] else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
