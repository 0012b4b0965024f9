"""The owner timeline of a chaos run as a PNG: `python -m bench.chaos.plot RUN.json OUT.png`.

Top: one row per node, a bar while its MAC answers ARP for the VIP. Bottom: the number
of owners (0 = nobody answers, 2+ = split brain). Faults are shaded by kind, and the
violations are marked. Needs matplotlib (pip install matplotlib), not a dependency of
the daemon.
"""

from __future__ import annotations

import json
import sys
from typing import Any

COLOURS = {
    "kill9": "#d62728",
    "sigterm": "#ff7f0e",
    "linkdown": "#8c564b",
    "sigstop": "#9467bd",
    "partition": "#1f77b4",
    "loss": "#17becf",
    "vipdel": "#e377c2",
    "failup": "#bcbd22",
    "apistop": "#7f7f7f",  # --kubernetes: the apiserver's faults (row "apiserver")
    "apikill": "#2ca02c",
}


def plot(result: dict[str, Any], out: str, start_min: float = 0.0, end_min: float = 0.0) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    t0 = result["t0"]
    nodes = sorted({n for _, _, owners in result["timeline"] for n in owners if n != "?"})
    nodes = sorted(set(nodes) | {f["node"] for f in result["faults"] if f["node"] != "*"})
    lo = start_min * 60
    hi = end_min * 60 if end_min else (result["end"] - t0)
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(16, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]}
    )
    for ax in (top, bottom):
        for f in result["faults"]:
            s, e = f["start"] - t0, max(f["end"] - t0, f["start"] - t0 + 0.3)
            if e < lo or s > hi:
                continue
            ax.axvspan(s, e, color=COLOURS.get(f["kind"], "grey"), alpha=0.25, lw=0)
    for row, node in enumerate(nodes):
        spans = [
            (a - t0, b - a) for a, b, owners in result["timeline"] if node in owners and b - t0 > lo
        ]
        top.broken_barh(spans, (row - 0.35, 0.7), color="#333333")
        for f in result["faults"]:
            if f["node"] == node and lo <= f["start"] - t0 <= hi:
                top.text(f["start"] - t0, row + 0.4, f["kind"], fontsize=6, rotation=45)
    top.set_yticks(range(len(nodes)), nodes)
    top.set_ylim(-0.6, len(nodes) - 0.1)
    top.set_title(
        f"chaos seed {result['seed']}, {result['minutes']:g} min: VIP owner as the prober sees it "
        f"(ARP every 10 ms); zero owners {result['zero_owner_s']:.1f} s, two or more "
        f"{result['multi_owner_s']:.1f} s, {len(result['violations'])} violation(s)",
        fontsize=10,
    )
    xs: list[float] = []
    ys: list[int] = []
    for a, b, owners in result["timeline"]:
        n = -1 if "?" in owners else len(owners)
        xs += [a - t0, b - t0]
        ys += [n, n]
    bottom.plot(xs, ys, lw=0.8, color="black")
    bottom.set_yticks([0, 1, 2, 3])
    bottom.set_ylim(-0.3, 3.3)
    bottom.set_ylabel("owners")
    bottom.set_xlabel("seconds since the start of the schedule")
    bottom.set_xlim(lo, hi)
    for v in result["violations"]:
        if v.get("t"):
            for ax in (top, bottom):
                ax.axvline(v["t"] - t0, color="red", lw=1.2, ls="--")
    kinds = {f["kind"] for f in result["faults"]}
    top.legend(
        handles=[Patch(color=c, alpha=0.4, label=k) for k, c in COLOURS.items() if k in kinds],
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=len(COLOURS),
        fontsize=7,
        frameon=False,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m bench.chaos.plot RUN.json OUT.png [FROM TO]", file=sys.stderr)
        return 2
    with open(argv[0]) as fh:
        result = json.load(fh)
    extra = [float(x) for x in argv[2:4]]
    plot(result, argv[1], *extra)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
