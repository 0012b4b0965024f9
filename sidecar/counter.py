"""The 64-bit advertisement counter and the optional replay guard.

ucarp sends a fresh random counter per advert until it hears a valid peer, then
continues from "last heard + 1"; it never checks what it receives (spec 1.5). With
replay protection on (our extension) the counter we send also never falls below the
wall clock in microseconds, so it grows across restarts, and each peer's counter must
strictly increase: a captured advert replayed later is dropped.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from vip_sidecar.inet import IPAddress

MASK64 = (1 << 64) - 1


class AdvertCounter:
    def __init__(
        self,
        monotonic: bool = False,
        rng: Callable[[int], int] = secrets.randbits,
        wallclock_us: Callable[[], int] = lambda: time.time_ns() // 1000,
    ) -> None:
        self._monotonic = monotonic
        self._rng = rng
        self._wallclock_us = wallclock_us
        self._heard = False
        self._value = 0

    def next(self) -> int:
        if self._monotonic:
            self._value = max((self._value + 1) & MASK64, self._wallclock_us() & MASK64)
        elif not self._heard:
            self._value = (self._rng(32) << 32) | self._rng(32)
        else:
            self._value = (self._value + 1) & MASK64
        return self._value

    def heard(self, counter: int) -> None:
        """A valid advert arrived: continue from its counter, like ucarp."""
        self._heard = True
        self._value = counter


class ReplayGuard:
    """Per-source strictly increasing counters."""

    def __init__(self) -> None:
        self._last: dict[IPAddress, int] = {}

    def fresh(self, src: IPAddress, counter: int) -> bool:
        last = self._last.get(src)
        return last is None or counter > last

    def accept(self, src: IPAddress, counter: int) -> None:
        self._last[src] = counter
