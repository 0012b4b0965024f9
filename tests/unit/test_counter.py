from ipaddress import IPv4Address

from vip_sidecar.counter import MASK64, AdvertCounter, ReplayGuard


def test_random_until_heard_then_last_plus_one_like_ucarp():
    draws = iter(range(1, 100))
    c = AdvertCounter(rng=lambda bits: next(draws))
    first, second = c.next(), c.next()
    assert first != second  # fresh random per advert while nobody is heard
    c.heard(41)
    assert [c.next(), c.next()] == [42, 43]
    c.heard(MASK64)
    assert c.next() == 0  # wraps


def test_monotonic_mode_never_goes_below_wallclock():
    now = [1000]
    c = AdvertCounter(monotonic=True, wallclock_us=lambda: now[0])
    assert c.next() == 1000
    assert c.next() == 1001
    now[0] = 5000
    assert c.next() == 5000
    c.heard(9000)
    assert c.next() == 9001


def test_replay_guard():
    g = ReplayGuard()
    a, b = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2")
    assert g.fresh(a, 5)
    g.accept(a, 5)
    assert not g.fresh(a, 5) and not g.fresh(a, 4) and g.fresh(a, 6)
    assert g.fresh(b, 1)
