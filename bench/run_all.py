"""Run every benchmark (failover, ipv6, footprint, scale) one after the other and print their
tables and ratios; `--quick` is the CI smoke mode (one failover run per daemon and
scenario, 4-s windows, N = 1 and 16: about 3 minutes).

    sudo python -m bench.run_all [--quick] [--json-dir DIR] [--only failover,ipv6,footprint,scale]

Each benchmark runs in its own process (its own namespaces, cleaned up on exit, Ctrl-C
included); the exit status is non-zero if any of them failed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHES = ("failover", "ipv6", "footprint", "scale")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI smoke mode")
    p.add_argument("--json-dir", help="write <bench>.json raw results into this directory")
    p.add_argument("--only", default=",".join(BENCHES), help="comma-separated subset")
    args = p.parse_args(argv)
    chosen = [b for b in args.only.split(",") if b]
    unknown = set(chosen) - set(BENCHES)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    statuses: dict[str, int] = {}
    started = time.monotonic()
    for name in chosen:
        cmd = [sys.executable, "-m", f"bench.{name}"]
        if args.quick:
            cmd.append("--quick")
        if args.json_dir:
            Path(args.json_dir).mkdir(parents=True, exist_ok=True)
            cmd += ["--json", str(Path(args.json_dir) / f"{name}.json")]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            statuses[name] = proc.wait()
        except KeyboardInterrupt:
            # the child got the same Ctrl-C (same process group) and cleans up itself
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise
        print(f"-- bench.{name}: exit {statuses[name]} after {time.monotonic() - t0:.0f} s\n",
              flush=True)  # fmt: skip
    total = time.monotonic() - started
    print(
        f"== all benchmarks done in {total:.0f} s: "
        + ", ".join(f"{n} {'ok' if rc == 0 else f'FAILED ({rc})'}" for n, rc in statuses.items())
    )
    return 0 if all(rc == 0 for rc in statuses.values()) else 1


if __name__ == "__main__":
    if __package__ in (None, ""):
        os.chdir(REPO)
    sys.exit(main())
