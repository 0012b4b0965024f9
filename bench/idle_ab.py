"""Idle CPU before/after: `python -m bench.idle_ab --before TREE [--rounds 3] [--window 30]`.

bench/footprint.py's pair measurement (h1 master, h2 backup, one VIP, alias only, CPU
from schedstat) for three daemons in interleaved rounds: vip-sidecar from another
checkout (`--before`, e.g. a `git worktree` of the commit before a change), vip-sidecar
from this tree, and ucarp. Interleaving puts the three under the same load, so the
before/after and vip-sidecar/ucarp ratios are measured in one run even on a shared VM.
Each tree runs with its own `.venv/bin/python` if it has one, else this interpreter.
docs/reliability.md (idle CPU) has a run.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import footprint as fp
from bench.common import (
    ADVBASE,
    BACKUP_SKEW,
    MASTER_SKEW,
    PASSWORD,
    REPO,
    Proc,
    Topology,
    base_parser,
    bench_topology,
    measure_usage,
    print_header,
    require_tools,
    wait_for,
    write_json,
)


def start_tree(topo: Topology, i: int, skew: int, tree: Path, name: str) -> fp.PlainSidecar:
    """vip-sidecar from `tree` (its cwd and sys.path[0], so its own code runs)."""
    host = topo.hosts[i]
    venv = tree / ".venv" / "bin" / "python"
    python = str(venv) if venv.exists() else sys.executable
    args = [
        "run", "-i", host.ifname, "-s", host.ip, "-v", str(fp.VHID), "-p", PASSWORD,
        "-a", topo.vip(), "-b", str(ADVBASE), "-k", str(skew), "--provider", "alias",
        "--log-format", "json", "--facility", "none",
    ]  # fmt: skip
    cmd = f"cd {tree} && exec {python} -m vip_sidecar {' '.join(args)}"
    proc = Proc(
        host, ["sh", "-c", cmd], topo.workdir / f"{name}.log", env={"PYTHONPATH": str(tree)}
    )
    topo.procs.append(proc)
    return fp.PlainSidecar(proc, host)


def measure(topo: Topology, kind: str, trees: dict[str, Path], window: float, r: int) -> Any:
    h1, h2 = topo.hosts[:2]
    fp.clean(topo)
    if kind == "ucarp":
        m = fp.start(topo, "ucarp", h1, MASTER_SKEW, f"ucarp-m{r}")
        b = fp.start(topo, "ucarp", h2, BACKUP_SKEW, f"ucarp-b{r}")
    else:
        m = start_tree(topo, 0, MASTER_SKEW, trees[kind], f"{kind}-m{r}")
        b = start_tree(topo, 1, BACKUP_SKEW, trees[kind], f"{kind}-b{r}")
    try:
        wait_for(
            lambda: m.state() == "MASTER" and b.state() == "BACKUP" and h1.has_address(topo.vip()),
            30,
            what=f"{kind}: h1 master, h2 backup",
        )
        time.sleep(3.0)  # start-up work is over
        usage = measure_usage({"master": m.pids, "backup": b.pids}, window)
        return {role: u.cpu_pct for role, u in usage.items()}
    finally:
        m.stop()
        b.stop()


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--before", required=True, type=Path, help="the other checkout")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--window", type=float, default=30.0)
    args = p.parse_args(argv)
    require_tools("ucarp")
    info = print_header("idle_ab", [sys.executable, "-m", "bench.idle_ab", *(argv or sys.argv[1:])])
    trees = {"before": args.before.resolve(), "after": REPO}
    results: dict[str, list[Any]] = {"before": [], "after": [], "ucarp": []}
    with bench_topology(2) as topo:
        for r in range(1 if args.quick else args.rounds):
            for kind in results:
                results[kind].append(
                    measure(topo, kind, trees, 4.0 if args.quick else args.window, r)
                )
                print(f"round {r} {kind}: {results[kind][-1]}", flush=True)
    medians = {
        f"{kind} {role}": statistics.median(x[role] for x in rows)
        for kind, rows in results.items()
        for role in ("master", "backup")
    }
    for role in ("master", "backup"):
        u = medians[f"ucarp {role}"]
        for kind in ("before", "after"):
            v = medians[f"{kind} {role}"]
            print(f"{role}: {kind} {v:.4f} % ({v * 10:.3f} ms/s), ucarp {u:.4f} %: {v / u:.1f}x")
    write_json(args.json, {"machine": info, "trees": trees, "results": results, "medians": medians})
    return 0


if __name__ == "__main__":
    sys.exit(main())
