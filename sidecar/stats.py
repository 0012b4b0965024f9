"""Plain counters and histograms kept by the runtime.

They cost nothing when nobody looks; /status and /metrics read them at request time
(prometheus-client is imported only when the HTTP server is enabled).
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class Histogram:
    """Cumulative-bucket histogram in the Prometheus sense."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # last slot is +Inf
        self.total = 0.0
        self.n = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1

    def cumulative(self) -> list[tuple[str, int]]:
        out, acc = [], 0
        for bound, count in zip((*self.buckets, float("inf")), self.counts, strict=True):
            acc += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), acc))
        return out


@dataclass
class VipStats:
    adverts_sent: int = 0
    adverts_received: int = 0
    send_errors: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    transitions: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    vetoes: int = 0
    repairs: Counter[str] = field(default_factory=Counter)
    provider_failures: Counter[tuple[str, str]] = field(default_factory=Counter)
    provider_durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    phases: dict[str, Histogram] = field(default_factory=dict)
    advert_lateness: Histogram = field(
        default_factory=lambda: Histogram(
            (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
        )
    )
    recent_lateness: deque[float] = field(default_factory=lambda: deque(maxlen=2048))

    def observe_provider(self, provider: str, action: str, seconds: float, ok: bool) -> None:
        self.provider_durations.setdefault((provider, action), Histogram()).observe(seconds)
        if not ok:
            self.provider_failures[(provider, action)] += 1

    def observe_phase(self, phase: str, seconds: float) -> None:
        self.phases.setdefault(phase, Histogram()).observe(seconds)

    def observe_lateness(self, seconds: float) -> None:
        self.advert_lateness.observe(seconds)
        self.recent_lateness.append(seconds)

    def lateness_percentiles(self) -> dict[str, float]:
        data = sorted(self.recent_lateness)
        if not data:
            return {}

        def pct(p: float) -> float:
            return data[min(len(data) - 1, int(p * len(data)))]

        return {"p50": pct(0.50), "p99": pct(0.99), "max": data[-1]}

    def as_dict(self) -> dict[str, Any]:
        return {
            "adverts_sent": self.adverts_sent,
            "adverts_received": self.adverts_received,
            "send_errors": self.send_errors,
            "drops": dict(self.drops),
            "transitions": [
                {"from": a, "to": b, "reason": r, "count": n}
                for (a, b, r), n in sorted(self.transitions.items())
            ],
            "vetoes": self.vetoes,
            "repairs": dict(self.repairs),
            "provider_failures": {f"{p}.{a}": n for (p, a), n in self.provider_failures.items()},
            "advert_lateness_s": self.lateness_percentiles(),
        }
