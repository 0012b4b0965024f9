"""When the housekeeping loop wakes up: shared with the protocol timers where it can. The
daemon's idle CPU is mostly its wake-ups (about 0.3 ms of CPU each at advbase 1 on the VM
of docs/reliability.md), so the round shares one with the MASTER's advert timer or a
BACKUP's received advert."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

#: a round run on a received advert waits this much of a tick longer for the next one
ADVERT_SLACK = 0.05


def next_housekeeping(
    now: float, tick: float, timers: Sequence[float | None], on_advert: bool = False
) -> float:
    """When the next housekeeping round runs: `tick` from now, or a little earlier at the
    same instant as a protocol timer (a MASTER's next advert) due in the last quarter of
    the tick. The two then share one wake-up of the process: at advbase 1 a Python
    wake-up costs about as much CPU as everything the round does (docs/reliability.md).
    A round that ran on a received advert (a BACKUP's, see Runtime._on_readable) is due
    a little more than a tick later, so that the next advert, which comes one advert
    interval plus the sender's lateness later, arrives in time to run it again."""
    due = [t for t in timers if t is not None and now + 0.75 * tick <= t <= now + tick]
    if due:
        return min(due)
    return now + tick * (1 + ADVERT_SLACK if on_advert else 1)


def round_may_start(now: float, when: float, tick: float) -> bool:
    """A received advert runs the round it precedes by at most a quarter of a tick."""
    return now >= when - 0.25 * tick


async def sleep_until(
    loop: asyncio.AbstractEventLoop, when: float, fut: asyncio.Future[None]
) -> None:
    # call_at with the very same `when` as the advert timer: asyncio runs both handles in
    # one pass (asyncio.sleep() would compute its own deadline, microseconds later); `fut`
    # may also be completed earlier by a received advert
    handle = loop.call_at(when, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
