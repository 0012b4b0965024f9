"""The housekeeping round shares its wake-up with a MASTER's advert timer when that timer
is due in the last quarter of the tick, and with a BACKUP's received advert when that
arrives in the last quarter (one wake-up per second instead of two)."""

import asyncio

import pytest

from tests.unit.fakes import FakeTransport
from vip_sidecar.config import build_config
from vip_sidecar.runtime import Runtime
from vip_sidecar.wakeups import ADVERT_SLACK, next_housekeeping, round_may_start


def test_plain_tick_without_timers():
    assert next_housekeeping(100.0, 1.0, []) == 101.0
    assert next_housekeeping(100.0, 1.0, [None, None]) == 101.0


def test_joins_an_advert_due_in_the_last_quarter_of_the_tick():
    assert next_housekeeping(100.0, 1.0, [100.98]) == 100.98
    assert next_housekeeping(100.0, 1.0, [100.75, None, 100.9]) == 100.75


def test_never_later_than_the_tick_nor_much_earlier():
    # an advert due after the tick, or early in it, does not move the round
    assert next_housekeeping(100.0, 1.0, [101.2]) == 101.0
    assert next_housekeeping(100.0, 1.0, [100.5]) == 101.0
    # fast timers (-b 0: an advert every few ms): the round still runs about once a tick
    assert 100.75 <= next_housekeeping(100.0, 1.0, [100.004, 100.8]) <= 101.0


def test_a_round_run_on_a_received_advert_waits_a_little_longer_for_the_next_one():
    # the next advert comes one interval plus the sender's lateness later: it must land
    # inside [due - quarter tick, due] to run that round too
    due = next_housekeeping(100.0, 1.0, [], on_advert=True)
    assert due == pytest.approx(101.0 + ADVERT_SLACK)
    assert round_may_start(101.003, due, 1.0)
    assert not round_may_start(100.7, due, 1.0)
    # a protocol timer in the last quarter still wins (a MASTER's own advert)
    assert next_housekeeping(100.0, 1.0, [100.9], on_advert=True) == 100.9


async def test_a_received_advert_runs_the_round_that_is_nearly_due():
    cfg = build_config({"interface": "hk0", "srcip": "10.99.0.2", "vhid": 3, "pass": "pw",
                        "addr": "10.99.0.100"})
    rt = Runtime(cfg, {}, transport_factory=FakeTransport, handle_signals=False)
    await rt.start()
    try:
        loop = asyncio.get_running_loop()
        for _ in range(3):
            await asyncio.sleep(0)  # the first round ran; the next one is a tick away
        transport = rt.transports["hk0"]
        first_round, beat = rt._round, rt.loop_heartbeat
        assert first_round is not None and rt._round_at > loop.time() + 0.5
        rt._on_readable(transport)  # an advert early in the tick: the round waits
        assert not first_round.done()
        rt._round_at = loop.time() + 0.1  # now one arrives in the last quarter
        rt._on_readable(transport)
        assert first_round.done()
        for _ in range(3):
            await asyncio.sleep(0)
        assert rt.loop_heartbeat > beat  # the round ran without its own wake-up
        assert rt._round is not first_round
        assert rt._round_at == pytest.approx(loop.time() + 1.0 + ADVERT_SLACK, abs=0.05)
    finally:
        await rt.shutdown()
