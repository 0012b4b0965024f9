"""The seeded fault schedule: the same seed gives the same list of faults.

Faults come in episodes of one or two overlapping faults; the next episode starts after
the last fault of the previous one has ended plus the recovery deadline (dead interval
+ 1 s) and a random pause, so most fault ends can be judged by invariant (b). Which
node a fault hits is resolved when it fires (the "master" is whoever answers then), from
a pick drawn here, so a replay with the same seed makes the same choices in the same
situations.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# kind -> (weight, shortest, longest duration in seconds)
KINDS: dict[str, tuple[float, float, float]] = {
    "kill9": (2, 0.5, 6.0),  # kill -9, restart after the duration
    "sigterm": (2, 0.5, 6.0),  # SIGTERM, restart after the duration
    "linkdown": (1.5, 1.0, 8.0),
    "sigstop": (1.5, 1.0, 5.0),
    "partition": (1, 2.0, 10.0),  # protocol 112 from/to one node dropped on the bridge
    "loss": (1, 5.0, 20.0),  # 30 % of protocol 112 dropped on the bridge
    "vipdel": (1, 0.0, 0.0),  # `ip addr del` of the VIP on the master
    "failup": (1, 4.0, 12.0),  # the script provider's `up` fails half the time
}
# with --kubernetes (a Lease fence against the real apiserver), the apiserver too
API_KINDS: dict[str, tuple[float, float, float]] = {
    "apistop": (1, 1.0, 8.0),  # SIGSTOP of kube-apiserver (requests hang), then SIGCONT
    "apikill": (1, 0.5, 8.0),  # SIGKILL of kube-apiserver, restart after the duration
}
# an apiserver restart takes seconds on its own (about 10 s on a loaded 2-core VM) and
# the fault only ends when it answers /readyz: the next episode waits this much longer
RESTART_SLACK_S = {"apikill": 15.0}
# one shared resource each: never two faults of the same group at once
EXCLUSIVE = (frozenset({"loss", "partition"}), frozenset(API_KINDS))
# restarted processes: never the survivor node, whose RSS is followed over the whole run
RESTARTS = frozenset({"kill9", "sigterm"})


@dataclass(frozen=True)
class Planned:
    id: int
    kind: str
    at: float  # seconds after the start of the schedule
    duration: float
    pick: float  # 0..1: which candidate node, resolved at run time


def exclusive(a: str, b: str) -> bool:
    return any(a in group and b in group for group in EXCLUSIVE)


def plan(
    seed: int,
    seconds: float,
    recovery_deadline: float,
    warmup: float = 10.0,
    tail: float = 10.0,
    kinds: dict[str, tuple[float, float, float]] = KINDS,
) -> list[Planned]:
    rng = random.Random(seed)
    names = list(kinds)
    weights = [kinds[k][0] for k in names]
    out: list[Planned] = []
    t = warmup
    while True:
        episode: list[Planned] = []
        kind = rng.choices(names, weights)[0]
        episode.append(_draw(rng, len(out) + 1, kinds[kind], kind, t))
        if rng.random() < 0.3:
            # a second fault while the first one is on: a different kind, and not two
            # bridge-wide (or two apiserver) faults together
            first = episode[0]
            others = [k for k in names if k != kind and not exclusive(k, kind)]
            second = rng.choices(others, [kinds[k][0] for k in others])[0]
            at = t + rng.uniform(0.0, first.duration)
            episode.append(_draw(rng, len(out) + 2, kinds[second], second, at))
        end = max(p.at + p.duration + RESTART_SLACK_S.get(p.kind, 0.0) for p in episode)
        if end > seconds - tail:
            return out
        out.extend(episode)
        t = end + recovery_deadline + rng.uniform(1.0, 5.0)


def _draw(
    rng: random.Random, ident: int, spec: tuple[float, float, float], kind: str, at: float
) -> Planned:
    _, lo, hi = spec
    return Planned(ident, kind, round(at, 3), round(rng.uniform(lo, hi), 3), rng.random())
