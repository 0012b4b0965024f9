"""When the housekeeping loop wakes up: shared with the protocol timers where it can."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence


def next_housekeeping(now: float, tick: float, timers: Sequence[float | None]) -> float:
    """When the next housekeeping round runs: `tick` from now, or a little earlier at the
    same instant as a protocol timer (a MASTER's next advert) due in the last quarter of
    the tick. The two then share one wake-up of the process: at advbase 1 a Python
    wake-up costs about as much CPU as everything the round does (docs/reliability.md)."""
    due = [t for t in timers if t is not None and now + 0.75 * tick <= t <= now + tick]
    return min(due) if due else now + tick


async def sleep_until(loop: asyncio.AbstractEventLoop, when: float) -> None:
    # call_at with the very same `when` as the advert timer: asyncio runs both handles in
    # one pass (asyncio.sleep() would compute its own deadline, microseconds later)
    fut: asyncio.Future[None] = loop.create_future()
    handle = loop.call_at(when, _wake, fut)
    try:
        await fut
    finally:
        handle.cancel()


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
