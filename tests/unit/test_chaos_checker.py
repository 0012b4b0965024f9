"""The chaos soak's outside checker on synthetic histories: every figure and every
invariant, with histories that hold and histories that violate each one."""

import math

import pytest

from bench.chaos.checker import (
    Fault,
    History,
    Interval,
    Params,
    Sample,
    check,
    multi_owner_s,
    recovery_time,
    timeline,
    zero_owner_s,
)

P = Params(advert_interval_s=1.0, dead_interval_s=3.4, slot_s=0.01, smooth=3)


def samples(*segments: tuple[float, str], t0: float = 0.0) -> list[Sample]:
    """segments: (seconds, "A,B") -> one 10 ms prober slot after the other."""
    out = []
    t = t0
    for seconds, owners in segments:
        n = round(seconds / P.slot_s)
        for _ in range(n):
            out.append(Sample(round(t, 6), frozenset(o for o in owners.split(",") if o)))
            t += P.slot_s
    return out


def history(segs, faults=(), **kw) -> History:
    s = samples(*segs)
    return History(
        samples=s,
        faults=list(faults),
        nodes=["A", "B", "C"],
        end=s[-1].t + P.slot_s,
        **kw,
    )


def kinds(result) -> list[str]:
    return [v["invariant"] for v in result["violations"]]


# ---------------------------------------------------------------------------- timeline
def test_timeline_merges_constant_owner_sets_and_smooths_a_late_reply():
    # one missing answer (a late reply) must not read as a zero-owner slot
    s = samples((1.0, "A"), (0.01, ""), (1.0, "A"))
    tl = timeline(s, P, end=2.01)
    assert [iv.owners for iv in tl] == [frozenset({"A"})]
    assert tl[0].length == pytest.approx(2.01)
    assert zero_owner_s(tl) == 0


def test_timeline_counts_zero_and_multi_owner_time():
    s = samples((1.0, "A"), (2.0, ""), (1.0, "B"), (0.5, "A,B"), (1.0, "A"))
    tl = timeline(s, P, end=5.5)
    # the gap loses the smoothing window (3 slots) at its start
    assert zero_owner_s(tl) == pytest.approx(2.0 - 0.02, abs=1e-6)
    # A appears at 4.0 while B stays present for 3 slots after its last answer at 4.49
    assert multi_owner_s(tl) == pytest.approx(0.5 + 0.02, abs=1e-6)


def test_prober_silence_is_unobserved_not_zero_owner():
    s = samples((1.0, "A")) + samples((1.0, "A"), t0=3.0)
    tl = timeline(s, P, end=4.0)
    assert zero_owner_s(tl) == 0
    unobserved = [iv for iv in tl if "?" in iv.owners]
    assert len(unobserved) == 1
    assert unobserved[0].length == pytest.approx(3.0 - 1.0 - P.gap_s + P.slot_s, abs=1e-6)


# ---------------------------------------------------------------------------- recovery
def test_recovery_time_needs_a_stable_single_owner():
    tl = [
        Interval(0, 10, frozenset({"A"})),
        Interval(10, 12, frozenset()),
        Interval(12, 12.2, frozenset({"B"})),  # too short to count
        Interval(12.2, 12.4, frozenset({"A", "B"})),
        Interval(12.4, 20, frozenset({"B"})),
    ]
    assert recovery_time(tl, 10.0, P, until=20) == pytest.approx(2.4)
    # already a single owner at the end of the fault: recovered at once
    assert recovery_time(tl, 5.0, P, until=20) == 0
    assert math.isinf(recovery_time(tl[:4], 10.0, P, until=12.4))


def test_recovery_run_must_keep_the_same_owner():
    tl = [
        Interval(0, 0.3, frozenset({"A"})),
        Interval(0.3, 0.6, frozenset({"B"})),
        Interval(0.6, 5, frozenset({"C"})),
    ]
    assert recovery_time(tl, 0.0, P, until=5) == pytest.approx(0.6)


# ---------------------------------------------------------------------------- invariants
def test_clean_history_has_no_violations_and_reports_figures():
    f = Fault("kill9", "A", 10.0, 12.0, id=1)
    r = check(history([(12.0, "A"), (2.5, ""), (10.0, "B")], [f]), P)
    assert r["violations"] == []
    assert r["zero_owner_s"] == pytest.approx(2.5 - 0.02, abs=1e-6)
    assert r["recovery_s"]["n"] == 1
    assert r["recovery_s"]["p50"] == pytest.approx(2.5, abs=0.011)
    assert r["faults"][0]["recovery_s"] == pytest.approx(2.5, abs=0.011)
    assert r["faults"][0]["overlapped_by"] == []


def test_invariant_a_two_owners_longer_than_an_advert_interval():
    f = Fault("linkdown", "C", 5.0, 15.0, id=1)
    r = check(history([(8.0, "A"), (1.5, "A,B"), (10.0, "A")], [f]), P)
    assert kinds(r) == ["a"]
    assert "2 owners (A, B)" in r["violations"][0]["what"]


def test_invariant_a_in_a_loss_window_allows_a_few_advert_intervals():
    f = Fault("loss", "*", 5.0, 15.0, id=1)
    # a backup missed two adverts and took over; the master missed its first advert back
    assert check(history([(8.0, "A"), (2.5, "A,B"), (10.0, "A")], [f]), P)["violations"] == []
    r = check(history([(8.0, "A"), (4.5, "A,B"), (10.0, "A")], [f]), P)
    assert kinds(r) == ["a"]
    assert "in a loss window" in r["violations"][0]["what"]


def test_invariant_a_allows_a_short_overlap():
    f = Fault("linkdown", "C", 5.0, 15.0, id=1)
    r = check(history([(8.0, "A"), (0.9, "A,B"), (10.0, "A")], [f]), P)
    assert r["violations"] == []
    assert r["multi_owner_s"] > 0.9


@pytest.mark.parametrize("kind", ["partition", "sigstop", "kill9"])
def test_invariant_a_excuses_split_brain_faults_and_their_convergence(kind):
    # two owners during the fault and for up to dead interval + 1 s after it
    f = Fault(kind, "A", 5.0, 9.0, id=1)
    r = check(history([(6.0, "A"), (7.0, "A,B"), (10.0, "B")], [f]), P)
    assert "a" not in kinds(r)


def test_invariant_a_not_excused_long_after_a_split_brain_fault():
    f = Fault("partition", "A", 5.0, 9.0, id=1)
    # two owners until 20 s: 9 + 4.4 s of grace leaves 6.6 s unexcused
    r = check(history([(6.0, "A"), (14.0, "A,B"), (10.0, "B")], [f]), P)
    assert "a" in kinds(r)
    assert "b" in kinds(r)  # and no single owner within the deadline either


def test_invariant_c_fenced_never_two_owners_even_in_a_partition():
    f = Fault("partition", "A", 5.0, 9.0, id=1)
    segs = [(6.0, "A"), (2.0, "A,B"), (10.0, "B")]
    fenced = Params(**{**P.__dict__, "fenced": True})
    assert "c" in kinds(check(history(segs, [f]), fenced))
    assert "c" not in kinds(check(history(segs, [f]), P))
    # a clean handover's smoothing overlap is not a fenced violation
    assert kinds(check(history([(6.0, "A"), (0.02, "A,B"), (10.0, "B")]), fenced)) == []


def test_invariant_c_excuses_only_the_address_of_a_node_without_a_daemon():
    """After a kill -9 the kernel answers for the dead daemon's address until the restarted
    daemon removes it: (c) leaves that node out until then, and no longer."""
    fenced = Params(**{**P.__dict__, "fenced": True, "fence_s": 9.0})
    f = Fault("kill9", "A", 5.0, 9.0, id=1)
    segs = [(5.0, "A"), (6.0, "A"), (2.0, "A,B"), (10.0, "B")]  # B owns from 11 s
    gone = [("A", 5.0, 13.0)]  # A's restarted daemon logged its first state at 13 s
    r = check(history(segs, [f], daemonless=gone), fenced)
    assert kinds(r) == []
    assert r["daemonless_multi_owner_s"] == pytest.approx(2.0, abs=0.02)
    # the restarted daemon was up at 12 s: the last second of overlap is its own
    r = check(history(segs, [f], daemonless=[("A", 5.0, 12.0)]), fenced)
    assert kinds(r) == ["c"]
    assert "for 1.0" in r["violations"][0]["what"]
    # another node's overlap is never excused by A's window
    segs = [(5.0, "A"), (6.0, "A"), (2.0, "A,B,C"), (10.0, "B")]
    assert kinds(check(history(segs, [f], daemonless=gone), fenced)) == ["c"]


def test_the_fence_lengthens_the_recovery_deadline():
    fenced = Params(**{**P.__dict__, "fenced": True, "fence_s": 9.0})
    assert fenced.recovery_deadline_s == pytest.approx(3.4 + 1.0 + 9.0)
    f = Fault("apikill", "apiserver", 5.0, 8.0, id=1)
    segs = [(5.0, "A"), (10.0, ""), (10.0, "B")]  # single owner 7 s after the end
    assert kinds(check(history(segs, [f]), fenced)) == []
    assert kinds(check(history(segs, [f]), P)) == ["b"]


def test_invariant_b_no_single_owner_in_time():
    f = Fault("linkdown", "A", 5.0, 8.0, id=1)
    r = check(history([(5.0, "A"), (3.0, ""), (5.0, ""), (10.0, "B")], [f]), P)
    assert kinds(r) == ["b"]
    assert r["faults"][0]["recovery_s"] == pytest.approx(5.0, abs=0.011)


def test_invariant_b_never_recovered():
    f = Fault("vipdel", "A", 5.0, 5.0, id=1)
    r = check(history([(5.0, "A"), (10.0, "")], [f]), P)
    assert kinds(r) == ["b"]
    assert r["recovery_s"]["never"] == 1


def test_invariant_b_judged_by_the_last_of_overlapping_faults():
    # f1 ends while f2 is still active: only f2's end is judged
    f1 = Fault("sigstop", "B", 5.0, 7.0, id=1)
    f2 = Fault("linkdown", "A", 6.0, 12.0, id=2)
    r = check(history([(6.0, "A"), (6.0, ""), (2.0, ""), (10.0, "B")], [f1, f2]), P)
    rows = {row["id"]: row for row in r["faults"]}
    assert rows[1]["overlapped_by"] == [2]
    assert rows[2]["overlapped_by"] == []
    assert r["recovery_s"]["n"] == 1
    assert r["violations"] == []


def test_invariant_d_deaths_tracebacks_and_leftover_vips():
    r = check(
        history(
            [(10.0, "A")],
            unscheduled_deaths=[("B", 3.0, 1)],
            tracebacks=[("C", "Traceback (most recent call last):")],
            sigterm_leftovers=[("A", 4.0)],
        ),
        P,
    )
    assert kinds(r) == ["d", "d", "d"]
    whats = " ".join(v["what"] for v in r["violations"])
    assert "B died unscheduled" in whats
    assert "traceback in C" in whats
    assert "VIP still on A" in whats


def test_invariant_e_rss_growth_of_long_lived_daemons():
    grow = [(t, 30_000 + (3000 if t > 100 else 0)) for t in range(0, 200, 5)]
    flat = [(t, 30_000 + (t % 10)) for t in range(0, 200, 5)]
    short = [(t, 30_000 + t * 1000) for t in range(0, 30, 5)]  # too short a life to judge
    r = check(history([(10.0, "A")], rss={"A": [grow], "B": [flat], "C": [short]}), P)
    assert kinds(r) == ["e"]
    assert "A RSS grew 3000 KiB" in r["violations"][0]["what"]
    assert r["rss_growth_kib"]["B"] < 10
    assert "C" not in r["rss_growth_kib"]
