"""The outside checker: owner timeline, figures and invariants from a recorded history.

Pure functions over plain data (no namespaces, no clock), so every computation is
unit-tested on synthetic histories (tests/unit/test_chaos_checker.py).

Ownership is what a client sees: the prober sends an ARP request for the VIP every
10 ms and records every MAC that answers; a node "owns" the VIP while its MAC answers.
A reply that arrives a little late (the prober or the node was not scheduled in time)
must not read as a gap, so a MAC counts as present for `smooth` slots after its last
answer (30 ms by default): handovers then show at most that much overlap, far below
the one-advert-interval bound of invariant (a).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.common import percentile

# faults during which two owners are expected and not judged by invariant (a):
# a partition is a split brain by construction; a SIGSTOPped master still holds its
# address while the backups take over; a kill -9'd daemon cannot remove its address
# (the kernel keeps answering ARP for it until the restarted daemon cleans up)
SPLIT_BRAIN_KINDS = frozenset({"partition", "sigstop", "kill9"})

# faults that lose adverts without cutting anyone off: invariant (a) allows more overlap
LOSSY_KINDS = frozenset({"loss"})
LOSS_INTERVALS = 4

RSS_LIMIT_KIB = 2048


@dataclass(frozen=True)
class Sample:
    """One prober slot: the ARP request went out at `t`; `owners` answered before the next."""

    t: float
    owners: frozenset[str]


@dataclass
class Fault:
    kind: str
    node: str
    start: float
    end: float  # the fault is over (restart issued, link up, SIGCONT, healed...)
    id: int = 0
    detail: str = ""


@dataclass(frozen=True)
class Interval:
    start: float
    end: float
    owners: frozenset[str]

    @property
    def length(self) -> float:
        return self.end - self.start


@dataclass
class Params:
    advert_interval_s: float = 1.0  # one advert interval of the master (invariant a)
    dead_interval_s: float = 3.4  # the longest dead interval of any backup (invariant b)
    slot_s: float = 0.01  # prober period
    smooth: int = 3  # slots a MAC stays present after its last answer
    gap_s: float = 0.1  # a prober silence longer than this is "unobserved", not zero-owner
    stable_s: float = 0.5  # recovered = exactly one owner for this long
    rss_min_life_s: float = 60.0  # incarnations shorter than this are not judged (e)
    rss_warmup_s: float = 20.0  # RSS growth is measured from this long after start
    fenced: bool = False  # a Lease fence is on: never two owners, partitions included (c)
    # what a fenced take-over adds to the dead interval: a backup takes a Lease only after
    # seeing it unchanged for a whole lease term, plus the veto backoff while it waits
    fence_s: float = 0.0

    @property
    def recovery_deadline_s(self) -> float:
        return self.dead_interval_s + 1.0 + self.fence_s


@dataclass
class History:
    samples: list[Sample]
    faults: list[Fault]
    nodes: list[str]
    end: float  # when recording stopped
    # (node, time, exit status) of every daemon exit the schedule did not cause
    unscheduled_deaths: list[tuple[str, float, int | None]] = field(default_factory=list)
    # (node, first line) of every traceback found in a daemon log
    tracebacks: list[tuple[str, str]] = field(default_factory=list)
    # (node, time) the VIP was still on the node after its daemon exited on SIGTERM
    sigterm_leftovers: list[tuple[str, float]] = field(default_factory=list)
    # node -> incarnations -> [(time, rss KiB)]
    rss: dict[str, list[list[tuple[float, int]]]] = field(default_factory=dict)
    # (node, from, to): no daemon ran on the node (kill -9 until the restarted daemon's
    # first state, its start-up clean-up done): only the kernel answered for its address
    daemonless: list[tuple[str, float, float]] = field(default_factory=list)


# ---------------------------------------------------------------------------- timeline
def timeline(samples: Sequence[Sample], params: Params, end: float | None = None) -> list[Interval]:
    """Constant-owner-set intervals. A prober silence longer than gap_s becomes an interval
    with owners {"?"} (unobserved) so it is never counted as zero or multiple owners."""
    out: list[Interval] = []
    if not samples:
        return out
    last_seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        for mac in s.owners:
            last_seen[mac] = i
        present = frozenset(m for m, j in last_seen.items() if i - j < params.smooth)
        nxt = samples[i + 1].t if i + 1 < len(samples) else (end or s.t + params.slot_s)
        stop = min(nxt, s.t + params.gap_s)
        _extend(out, s.t, stop, present)
        if nxt > stop:
            _extend(out, stop, nxt, frozenset({"?"}))
    return out


def _extend(out: list[Interval], start: float, end: float, owners: frozenset[str]) -> None:
    if end <= start:
        return
    if out and out[-1].owners == owners and math.isclose(out[-1].end, start, abs_tol=1e-9):
        out[-1] = Interval(out[-1].start, end, owners)
    else:
        out.append(Interval(start, end, owners))


def _owned(iv: Interval) -> bool:
    return "?" not in iv.owners


def zero_owner_s(tl: Iterable[Interval]) -> float:
    return sum(iv.length for iv in tl if not iv.owners)


def multi_owner_s(tl: Iterable[Interval]) -> float:
    return sum(iv.length for iv in tl if _owned(iv) and len(iv.owners) > 1)


def unobserved_s(tl: Iterable[Interval]) -> float:
    return sum(iv.length for iv in tl if not _owned(iv))


def clip(tl: Sequence[Interval], start: float, end: float) -> list[Interval]:
    return [
        Interval(max(iv.start, start), min(iv.end, end), iv.owners)
        for iv in tl
        if iv.end > start and iv.start < end
    ]


# ---------------------------------------------------------------------------- recovery
def recovery_time(tl: Sequence[Interval], after: float, params: Params, until: float) -> float:
    """Seconds from `after` until exactly one owner holds for stable_s (or until `until`,
    the next disturbance or the end of the record, whichever is first); inf if never."""
    run_start = 0.0
    run_owner: frozenset[str] | None = None
    for iv in tl:
        if iv.end <= after:
            continue
        start = max(iv.start, after)
        if start >= until:
            break
        if not _owned(iv) or len(iv.owners) != 1:
            run_owner = None
            continue
        if run_owner != iv.owners:
            run_start, run_owner = start, iv.owners
        if min(iv.end, until) - run_start >= params.stable_s or iv.end >= until:
            return run_start - after
    return math.inf


def _overlapping(f: Fault, faults: Sequence[Fault], horizon: float) -> list[Fault]:
    """Other faults active at some point of [f.end, f.end + horizon]; of faults ending at
    the same instant only the one with the highest id is left to judge the convergence."""
    return [
        g
        for g in faults
        if g is not f
        and g.start < f.end + horizon
        and (g.end > f.end or (g.end == f.end and g.id > f.id))
    ]


def _subtract(start: float, end: float, holes: Sequence[tuple[float, float]]) -> list[float]:
    """Lengths of the pieces of [start, end] outside every hole."""
    pieces = [(start, end)]
    for hs, he in holes:
        nxt = []
        for ps, pe in pieces:
            if he <= ps or hs >= pe:
                nxt.append((ps, pe))
                continue
            if hs > ps:
                nxt.append((ps, hs))
            if he < pe:
                nxt.append((he, pe))
        pieces = nxt
    return [pe - ps for ps, pe in pieces]


def without_daemonless(
    tl: Sequence[Interval], daemonless: Sequence[tuple[str, float, float]]
) -> list[Interval]:
    """The timeline with each node removed from the owner sets while no daemon ran on it."""
    cuts = sorted({t for _, a, b in daemonless for t in (a, b)})
    out: list[Interval] = []
    for iv in tl:
        inner = [t for t in cuts if iv.start < t < iv.end]
        for a, b in itertools.pairwise([iv.start, *inner, iv.end]):
            gone = {n for n, s, e in daemonless if s <= a and b <= e}
            _extend(out, a, b, iv.owners - gone if _owned(iv) else iv.owners)
    return out


def fence_violations(
    tl: Sequence[Interval], daemonless: Sequence[tuple[str, float, float]], params: Params
) -> list[dict[str, Any]]:
    overlap_ok = (params.smooth + 2) * params.slot_s
    out = []
    for iv in without_daemonless(tl, daemonless):
        if _owned(iv) and len(iv.owners) > 1 and iv.length > overlap_ok:
            out.append(
                {
                    "invariant": "c",
                    "what": f"fenced, yet {len(iv.owners)} owners "
                    f"({', '.join(sorted(iv.owners))}) for {iv.length:.3f} s",
                    "t": iv.start,
                }
            )
    return out


# ---------------------------------------------------------------------------- the check
def check(h: History, params: Params) -> dict[str, Any]:
    tl = timeline(h.samples, params, h.end)
    violations: list[dict[str, Any]] = []
    grace = params.recovery_deadline_s

    # (a) outside partitions / SIGSTOPs / kill -9 windows (and the convergence time after
    # them), never two owners for longer than one advert interval. A loss window is a
    # partial partition: a backup that misses two adverts takes over, and the old master
    # only yields when it hears the new one, which is lost 30 % of the time too; there the
    # bound is LOSS_INTERVALS advert intervals instead of one.
    split = [(f.start, f.end + grace) for f in h.faults if f.kind in SPLIT_BRAIN_KINDS]
    lossy = [(f.start, f.end + grace) for f in h.faults if f.kind in LOSSY_KINDS]
    named: set[float] = set()
    for holes, intervals in ((split + lossy, 1), (split, LOSS_INTERVALS)):
        limit = intervals * params.advert_interval_s
        for iv in tl:
            if not _owned(iv) or len(iv.owners) < 2 or iv.start in named:
                continue
            longest = max(_subtract(iv.start, iv.end, holes), default=0.0)
            if longest > limit:
                named.add(iv.start)
                violations.append(
                    {
                        "invariant": "a",
                        "what": f"{len(iv.owners)} owners ({', '.join(sorted(iv.owners))}) "
                        f"for {longest:.3f} s > {intervals} advert interval(s) {limit:g} s"
                        + ("" if intervals == 1 else " in a loss window"),
                        "t": iv.start,
                    }
                )

    # (c) with the Lease fence, never two owners at all (partitions and SIGSTOPs included);
    # a clean handover shows up to the smoothing window plus one late slot of overlap in the
    # prober's record. The one exception is an address no daemon holds: a kill -9'd node's
    # kernel answers for it until the restarted daemon removes it, and no lease can stop
    # that (the fence decides what live daemons do); those windows are reported apart.
    if params.fenced:
        violations += fence_violations(tl, h.daemonless, params)

    # (b) after each fault ends: exactly one owner within the dead interval + 1 s
    table: list[dict[str, Any]] = []
    recoveries: list[float] = []
    starts = sorted(f.start for f in h.faults)
    for f in sorted(h.faults, key=lambda f: (f.end, f.start)):
        others = _overlapping(f, h.faults, grace)
        nxt = [s for s in starts if s > f.end]
        until = min(nxt[0] if nxt else h.end, h.end)
        rec = recovery_time(tl, f.end, params, until)
        window = clip(tl, f.start, min(f.end + grace, h.end))
        row = {
            **asdict(f),
            "duration_s": f.end - f.start,
            "recovery_s": rec,
            "overlapped_by": [g.id for g in others],
            "zero_owner_s": zero_owner_s(window),
            "multi_owner_s": multi_owner_s(window),
        }
        table.append(row)
        if others or until - f.end < grace:
            # another fault is still active (or starts) before the deadline: the later
            # fault's own check judges the convergence
            continue
        recoveries.append(rec)
        if rec > grace:
            violations.append(
                {
                    "invariant": "b",
                    "what": f"fault {f.id} ({f.kind} on {f.node}) ended at {f.end:.3f}: no "
                    f"single owner within {grace:.2f} s"
                    + ("" if math.isinf(rec) else f" (took {rec:.3f} s)"),
                    "t": f.end,
                }
            )

    # (d) no unscheduled death, no traceback, no VIP left after SIGTERM
    for node, t, rc in h.unscheduled_deaths:
        violations.append(
            {"invariant": "d", "what": f"{node} died unscheduled (exit {rc})", "t": t}
        )
    for node, line in h.tracebacks:
        violations.append({"invariant": "d", "what": f"traceback in {node} log: {line}", "t": None})
    for node, t in h.sigterm_leftovers:
        violations.append(
            {"invariant": "d", "what": f"VIP still on {node} after its SIGTERM exit", "t": t}
        )

    # (e) survivors' RSS grows by less than 2 MiB
    rss_growth: dict[str, float] = {}
    for node, lives in h.rss.items():
        for life in lives:
            if len(life) < 2 or life[-1][0] - life[0][0] < params.rss_min_life_s:
                continue
            base_t = life[0][0] + params.rss_warmup_s
            base = next((kib for t, kib in life if t >= base_t), life[-1][1])
            growth = life[-1][1] - base
            rss_growth[node] = max(rss_growth.get(node, -math.inf), growth)
            if growth >= RSS_LIMIT_KIB:
                violations.append(
                    {
                        "invariant": "e",
                        "what": f"{node} RSS grew {growth} KiB (limit {RSS_LIMIT_KIB} KiB)",
                        "t": life[-1][0],
                    }
                )

    finite = [r for r in recoveries if not math.isinf(r)]
    return {
        "violations": violations,
        "zero_owner_s": zero_owner_s(tl),
        "multi_owner_s": multi_owner_s(tl),
        # two owners only because a kill -9'd node's kernel still answered (fenced runs)
        "daemonless_multi_owner_s": multi_owner_s(tl)
        - multi_owner_s(without_daemonless(tl, h.daemonless)),
        "unobserved_s": unobserved_s(tl),
        "recovery_s": {
            "n": len(recoveries),
            "never": len(recoveries) - len(finite),
            "p50": percentile(finite, 50),
            "p99": percentile(finite, 99),
            "max": max(finite, default=math.nan),
        },
        "rss_growth_kib": rss_growth,
        "faults": table,
        "timeline": [[iv.start, iv.end, sorted(iv.owners)] for iv in tl],
    }
