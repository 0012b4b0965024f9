"""Every transition of the election, driven by a fake clock (no sleeping)."""

from ipaddress import IPv4Address

import pytest

from tests.unit.fakes import FakeClock
from vip_sidecar.carp import BOW_OUT
from vip_sidecar.election import (
    Election,
    ElectionParams,
    Reason,
    Reassert,
    RequestPromotion,
    SendAdvert,
    SendGarp,
    State,
    Transition,
    ucarp_ip_lower,
)

ME = IPv4Address("10.99.0.11")
PEER_LOWER = IPv4Address("10.99.1.10")  # "lower" than ME per ucarp's little-endian rule
PEER_HIGHER = IPv4Address("10.99.0.12")


def make(**kw):
    clock = FakeClock()
    params = ElectionParams(src=kw.pop("src", ME), **kw)
    e = Election(params, clock)
    return e, clock


def started(**kw):
    e, clock = make(**kw)
    assert e.start() == [Transition(State.INIT, State.BACKUP, Reason.STARTUP)]
    return e, clock


def to_master(e, clock):
    clock.advance(e.dead_interval_s())
    acts = e.tick()
    assert e.state is State.MASTER
    return acts


def transitions(actions):
    return [a for a in actions if isinstance(a, Transition)]


def test_init_ignores_adverts_and_start_is_once():
    e, _clock = make()
    assert e.on_advert(PEER_HIGHER, 1, 0) == []
    assert e.state is State.INIT
    e.start()
    assert e.start() == []


def test_dead_interval_formula_matches_ucarp():
    e, _ = make(advbase=1, advskew=100, deadratio=3)
    assert e.dead_interval_s() == pytest.approx(3.390625)
    assert e.interval_s() == pytest.approx(1.390625)
    e, _ = make(advbase=3, advskew=255, deadratio=3)
    assert e.dead_interval_s() == pytest.approx(9.996093)


def test_backup_becomes_master_exactly_at_dead_interval():
    e, clock = started()
    clock.advance(2.999)
    assert e.tick() == []
    assert e.next_deadline() == pytest.approx(clock.now + 0.001)
    clock.advance(0.001)
    acts = e.tick()
    assert acts == [
        Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN),
        SendGarp(),
        SendAdvert(1, 0),
    ]


def test_master_adverts_each_interval_and_delayed_garp_after_two():
    e, clock = started(advskew=100)
    to_master(e, clock)
    sent = []
    for _ in range(4):
        clock.now = e.next_deadline()
        sent.append(e.tick())
    assert sent[0] == [SendAdvert(1, 100)]
    assert sent[1] == [SendAdvert(1, 100), SendGarp()]
    assert sent[2] == [SendAdvert(1, 100)]
    # cadence is exactly one interval (1 + 100/256 s)
    assert e.next_deadline() - clock.now == pytest.approx(1.390625)


def test_advert_due_within_one_ms_is_sent_now():
    e, clock = started()
    to_master(e, clock)
    clock.now = e.next_deadline() - 0.0005
    assert e.tick() == [SendAdvert(1, 0)]


def test_backup_stays_while_master_advertises():
    e, clock = started(advskew=0)
    for _ in range(10):
        clock.advance(2.5)
        assert e.on_advert(PEER_HIGHER, 1, 50) == []  # even a worse master keeps us passive
        assert e.tick() == []
    assert e.state is State.BACKUP


def test_master_yields_to_better_master_after_one_final_advert():
    e, clock = started(advskew=50)
    to_master(e, clock)
    acts = e.on_advert(PEER_HIGHER, 1, 10)
    assert acts == [
        SendAdvert(1, 50),
        Transition(State.MASTER, State.BACKUP, Reason.PREFERRED_MASTER),
    ]
    assert e.state is State.BACKUP
    clock.advance(1)
    assert e.tick() == []  # no adverts while backup


def test_master_keeps_role_against_worse_master_and_reasserts():
    e, clock = started(advskew=10)
    to_master(e, clock)
    acts = e.on_advert(PEER_HIGHER, 1, 50)
    assert acts == [SendGarp(), Reassert(PEER_HIGHER)]
    assert e.state is State.MASTER
    clock.now = e.next_deadline()
    e.tick()
    clock.now = e.next_deadline()
    assert SendGarp() in e.tick()


def test_two_masters_equal_interval_lower_ip_wins():
    e, clock = started()
    to_master(e, clock)
    # the higher peer keeps advertising: we (lower) stay master
    assert e.on_advert(PEER_HIGHER, 1, 0) == [SendGarp(), Reassert(PEER_HIGHER)]
    # the lower peer wins the tie: we yield
    acts = e.on_advert(PEER_LOWER, 1, 0)
    assert transitions(acts) == [Transition(State.MASTER, State.BACKUP, Reason.PREFERRED_MASTER)]


def test_ucarp_tiebreak_is_little_endian():
    assert ucarp_ip_lower(IPv4Address("10.99.1.10"), IPv4Address("10.99.0.11"))
    assert not ucarp_ip_lower(IPv4Address("10.99.0.11"), IPv4Address("10.99.1.10"))
    assert ucarp_ip_lower(IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))


def test_preempt_takes_over_from_worse_master():
    e, _clock = started(advskew=0, preempt=True)
    acts = e.on_advert(PEER_HIGHER, 1, 50)
    assert transitions(acts) == [Transition(State.BACKUP, State.MASTER, Reason.PREEMPT)]


def test_no_preempt_without_flag_and_never_on_equal():
    e, _ = started(advskew=0, preempt=False)
    assert e.on_advert(PEER_HIGHER, 1, 50) == []
    e, _ = started(advskew=0, preempt=True)
    assert e.on_advert(PEER_HIGHER, 1, 0) == []
    assert e.state is State.BACKUP


def test_going_to_time_out_when_master_is_slower_than_our_dead_interval():
    e, _ = started(advbase=1)
    acts = e.on_advert(PEER_HIGHER, 5, 0)
    assert transitions(acts) == [Transition(State.BACKUP, State.MASTER, Reason.PEER_TIMING_OUT)]


def test_bow_out_advert_makes_backup_take_over_at_once():
    e, _clock = started(advbase=1, advskew=200)
    acts = e.on_advert(PEER_HIGHER, BOW_OUT, BOW_OUT)
    assert transitions(acts) == [Transition(State.BACKUP, State.MASTER, Reason.PEER_TIMING_OUT)]
    assert SendAdvert(1, 200) in acts


def test_master_ignores_bow_out_of_other_node_except_reassert():
    e, clock = started()
    to_master(e, clock)
    assert e.on_advert(PEER_HIGHER, BOW_OUT, BOW_OUT) == [SendGarp(), Reassert(PEER_HIGHER)]


def test_confirmed_promotion_flow():
    e, clock = started(confirm_promotions=True)
    clock.advance(3)
    assert e.tick() == [RequestPromotion(Reason.MASTER_DOWN, 1)]
    assert e.state is State.BACKUP
    clock.advance(5)
    assert e.tick() == []  # no second request while one is pending
    acts = e.confirm_promotion()
    assert transitions(acts) == [Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN)]
    assert e.confirm_promotion() == []


def test_refused_promotion_holds_down_then_asks_again():
    e, clock = started(confirm_promotions=True)
    clock.advance(3)
    e.tick()
    assert e.refuse_promotion(hold_s=10) == []
    assert e.state is State.BACKUP
    clock.advance(3)
    assert e.tick() == []  # dead interval passed but hold-down still active
    assert e.next_deadline() == pytest.approx(1000 + 3 + 10)
    clock.now = e.next_deadline()
    assert e.tick() == [RequestPromotion(Reason.MASTER_DOWN, 2)]


def test_pending_promotion_cancelled_when_good_master_heard():
    e, clock = started(confirm_promotions=True)
    clock.advance(3)
    e.tick()
    e.on_advert(PEER_HIGHER, 1, 0)
    assert e.confirm_promotion() == []
    assert e.state is State.BACKUP


def test_step_down_sends_bow_out_and_holds():
    e, clock = started()
    to_master(e, clock)
    acts = e.step_down(Reason.STEP_DOWN, hold_s=4)
    assert acts == [
        SendAdvert(BOW_OUT, BOW_OUT),
        Transition(State.MASTER, State.BACKUP, Reason.STEP_DOWN),
    ]
    clock.advance(3)
    assert e.tick() == []
    clock.advance(1)
    assert transitions(e.tick()) == [Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN)]


def test_preempt_is_suppressed_during_hold_down():
    e, clock = started(preempt=True)
    e.step_down(Reason.STEP_DOWN, hold_s=30)
    assert e.on_advert(PEER_HIGHER, 1, 50) == []
    clock.advance(31)
    assert transitions(e.on_advert(PEER_HIGHER, 1, 50))


def test_shutdown_from_master_bows_out_and_never_claims_again():
    e, clock = started()
    to_master(e, clock)
    acts = e.shutdown()
    assert acts == [
        SendAdvert(BOW_OUT, BOW_OUT),
        Transition(State.MASTER, State.BACKUP, Reason.SHUTDOWN),
    ]
    clock.advance(100)
    assert e.tick() == []
    assert e.next_deadline() is None
    assert e.on_advert(PEER_HIGHER, 5, 0) == []


def test_shutdown_from_backup_is_silent():
    e, _ = started()
    assert e.shutdown() == []


def test_carrier_loss_demotes_and_blocks_promotion_until_back():
    e, clock = started()
    to_master(e, clock)
    assert transitions(e.set_carrier(False)) == [
        Transition(State.MASTER, State.BACKUP, Reason.CARRIER_LOST)
    ]
    clock.advance(60)
    assert e.tick() == []
    assert e.set_carrier(True) == []
    clock.advance(3)
    assert transitions(e.tick())


def test_send_errors_raise_advskew_to_240_until_three_successes():
    e, clock = started(advskew=10)
    to_master(e, clock)
    for _ in range(3):
        e.send_result(False)
    assert e.advskew == 240
    clock.now = e.next_deadline()
    assert e.tick()[0] == SendAdvert(1, 240)
    for _ in range(2):
        e.send_result(True)
    assert e.advskew == 240
    e.send_result(True)
    assert e.advskew == 10


def test_demotion_adds_to_advskew_and_affects_preempt():
    e, _ = started(advskew=0, preempt=True)
    e.set_demotion(100)
    assert e.advskew == 100
    assert e.on_advert(PEER_HIGHER, 1, 50) == []  # 1+100/256 is worse than 1+50/256
    e.set_demotion(1000)
    assert e.advskew == 255


def test_255_255_node_sends_a_single_advert():
    e, clock = started(advbase=255, advskew=255)
    clock.advance(e.dead_interval_s())
    acts = e.tick()
    assert SendAdvert(255, 255) in acts
    clock.now = e.next_deadline()
    assert e.tick() == [SendAdvert(255, 255)]
    assert e.next_deadline() is None


def test_long_stall_does_not_cause_an_advert_burst():
    e, clock = started()
    to_master(e, clock)
    clock.advance(10)
    assert e.tick() == [SendAdvert(1, 0)]
    assert e.tick() == []
    assert e.next_deadline() == pytest.approx(clock.now + 1)


@pytest.mark.parametrize("kw", [dict(advbase=0, advskew=0), dict(deadratio=0), dict(advbase=256)])
def test_invalid_params_rejected(kw):
    with pytest.raises(ValueError):
        ElectionParams(src=ME, **kw)


def test_maintenance_bows_out_and_never_claims_until_off():
    e, clock = started()
    to_master(e, clock)
    acts = e.set_maintenance(True)
    assert acts == [
        SendAdvert(BOW_OUT, BOW_OUT),
        Transition(State.MASTER, State.BACKUP, Reason.MAINTENANCE),
    ]
    clock.advance(100)
    assert e.tick() == [] and e.next_deadline() is None
    assert e.on_advert(PEER_HIGHER, BOW_OUT, BOW_OUT) == []  # not even a bow-out tempts it
    assert e.set_maintenance(False) == []
    clock.advance(3)
    assert transitions(e.tick()) == [Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN)]


def test_a_stale_promotion_answer_is_ignored():
    e, clock = started(confirm_promotions=True)
    clock.advance(3)
    assert e.tick() == [RequestPromotion(Reason.MASTER_DOWN, 1)]
    e.on_advert(PEER_HIGHER, 1, 0)  # a master is alive after all: request 1 is void
    clock.advance(3)
    assert e.tick() == [RequestPromotion(Reason.MASTER_DOWN, 2)]
    assert e.confirm_promotion(ticket=1) == []  # the slow answer to request 1
    assert e.state is State.BACKUP
    assert e.refuse_promotion(5, ticket=2) == []
    assert e.state is State.BACKUP and e.pending is None


def test_maintenance_off_on_master_does_not_arm_a_stale_dead_timer():
    e, clock = started()
    to_master(e, clock)
    e.set_maintenance(False)
    deadline = e.next_deadline()
    assert deadline is not None and deadline > clock.now  # only the advert timer
    clock.advance(10)
    assert e.tick() == [SendAdvert(1, 0)]
    assert e.next_deadline() > clock.now


@pytest.mark.parametrize(("advbase", "back_after"), [(1, 6.0), (3, 12.0)])
def test_sigusr2_style_step_down_waits_the_hold_then_a_full_dead_interval(advbase, back_after):
    # measured with the real ucarp: alone, MASTER again 6 s after SIGUSR2 at -b 1, 12 s at -b 3
    e, clock = started(advbase=advbase)
    to_master(e, clock)
    acts = e.step_down(Reason.STEP_DOWN, hold_s=3, dead_after_hold=True)
    assert acts[0] == SendAdvert(BOW_OUT, BOW_OUT)
    clock.advance(back_after - 0.001)
    assert e.tick() == [] and e.state is State.BACKUP
    clock.advance(0.001)
    assert transitions(e.tick()) == [Transition(State.BACKUP, State.MASTER, Reason.MASTER_DOWN)]
