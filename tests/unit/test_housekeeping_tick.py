"""The housekeeping round shares its wake-up with a MASTER's advert timer when that timer
is due in the last quarter of the tick (one wake-up per second instead of two)."""

from vip_sidecar.wakeups import next_housekeeping


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
