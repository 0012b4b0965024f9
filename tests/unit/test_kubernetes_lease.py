"""Pure Lease rules (providers/kubernetes/lease.py): expiry, transitions, release, failsafe.

Every time is passed in: no clock is read, nothing sleeps.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from vip_sidecar.providers.kubernetes.lease import (
    ANNOTATION_POD,
    LeaseObserver,
    LeaseRecord,
    OutagePolicy,
    Standing,
    acquired,
    dns_name,
    format_microtime,
    format_time,
    judge,
    label_name,
    outage_verdict,
    parse_time,
    released,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
MICRO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def held_by(holder: str, renewed: datetime, duration: int = 10, rv: str = "5",
            transitions: int = 3) -> LeaseRecord:
    return LeaseRecord(holder, duration, renewed - timedelta(seconds=60), renewed, transitions,
                       rv, {ANNOTATION_POD: f"pod-{holder}"})


def verdict(record, *, mono=100.0, since=100.0, me="me"):
    return judge(record, me, now_mono=mono, observed_since=since)


# ------------------------------------------------------------------ time formats
def test_microtime_always_has_six_fraction_digits_even_at_a_whole_second():
    # the apiserver's MicroTime layout requires the fraction; the Python client drops
    # a zero one when it re-serialises, so a whole second is nudged by 1 us
    assert format_microtime(T0) == "2026-03-01T12:00:00.000001Z"
    assert format_microtime(T0.replace(microsecond=250000)) == "2026-03-01T12:00:00.250000Z"
    for us in (0, 1, 999999):
        assert MICRO.match(format_microtime(T0.replace(microsecond=us)))


def test_times_are_written_in_utc_whatever_the_input_zone():
    cet = T0.astimezone(timezone(timedelta(hours=1)))
    assert format_microtime(cet) == format_microtime(T0)
    assert format_time(cet) == "2026-03-01T12:00:00Z"


@pytest.mark.parametrize("text", ["2026-03-01T12:00:00.000000Z", "2026-03-01T12:00:00Z",
                                  "2026-03-01T13:00:00.000000+01:00"])
def test_parse_time_accepts_what_apiservers_and_clients_write(text):
    assert parse_time(text) == T0


def test_parse_time_tolerates_absent_and_garbage():
    assert parse_time(None) is None
    assert parse_time("") is None
    assert parse_time("yesterday") is None
    assert parse_time(T0.replace(tzinfo=None)) == T0


def test_record_round_trip_through_the_object_form():
    rec = held_by("a", T0)
    obj = rec.to_object("vip-sidecar-x", "ns")
    assert obj["apiVersion"] == "coordination.k8s.io/v1" and obj["kind"] == "Lease"
    assert obj["metadata"]["resourceVersion"] == "5"
    assert MICRO.match(obj["spec"]["renewTime"]) and MICRO.match(obj["spec"]["acquireTime"])
    back = LeaseRecord.from_object(obj)
    assert back.holder == "a" and back.transitions == 3 and back.duration_s == 10
    assert abs((back.renew_time - T0).total_seconds()) < 1e-5
    assert back.annotations == {ANNOTATION_POD: "pod-a"}


# ------------------------------------------------------------------ who may take it
def test_absent_free_and_mine():
    assert verdict(None).standing is Standing.ABSENT
    assert verdict(LeaseRecord(None, 1, T0, T0, 2, "3")).standing is Standing.FREE
    mine = verdict(held_by("me", T0))
    assert mine.standing is Standing.MINE


def test_valid_lease_of_another_holder_is_held_for_a_duration_from_our_first_look():
    rec = held_by("a", T0, duration=10)
    v = verdict(rec, mono=104, since=104)
    assert v.standing is Standing.HELD
    assert v.remaining_s == pytest.approx(10.0)  # not 10 - 4: its renewTime is not trusted
    assert "held by a" in v.detail
    assert verdict(rec, mono=113.99, since=104).standing is Standing.HELD
    assert verdict(rec, mono=114.0, since=104).standing is Standing.EXPIRED


@pytest.mark.parametrize("stamp_offset_s", [-3600.0, -30.0, 0.0, 30.0, 3600.0])
def test_the_holders_renew_time_never_shortens_or_lengthens_its_term(stamp_offset_s):
    """renewTime an hour in the past (our clock ahead) or future (its clock ahead): the
    verdict is the same, because judge() does not even receive a wall time."""
    rec = held_by("a", T0 + timedelta(seconds=stamp_offset_s), duration=10)
    assert verdict(rec, mono=109.9, since=100).standing is Standing.HELD
    assert verdict(rec, mono=110.0, since=100).standing is Standing.EXPIRED


def test_expiry_by_local_observation_ignores_a_holder_clock_running_ahead():
    # the holder's clock is 1 h ahead: its renewTime looks valid for an hour, but it has
    # not changed for a whole lease duration since we first saw it (client-go's rule)
    rec = held_by("a", T0 + timedelta(hours=1), duration=10)
    obs = LeaseObserver()
    since = obs.see(rec, 500.0)
    assert verdict(rec, mono=509.9, since=since).standing is Standing.HELD
    assert verdict(rec, mono=509.9, since=since).remaining_s == pytest.approx(0.1)
    assert verdict(rec, mono=510.0, since=since).standing is Standing.EXPIRED


def test_observation_restarts_whenever_the_resource_version_changes():
    obs = LeaseObserver()
    assert obs.see(held_by("a", T0, rv="5"), 10.0) == 10.0
    assert obs.see(held_by("a", T0, rv="5"), 15.0) == 10.0
    assert obs.see(held_by("a", T0, rv="6"), 16.0) == 16.0  # a renewal
    assert obs.see(None, 17.0) == 17.0


def test_observation_restarts_when_holder_or_renew_time_change_without_a_new_version():
    # a store that does not bump resourceVersion (or a client that strips it) still
    # restarts the observation on a renewal, as client-go compares the whole record
    obs = LeaseObserver()
    assert obs.see(held_by("a", T0, rv=None), 1.0) == 1.0
    assert obs.see(held_by("a", T0 + timedelta(seconds=2), rv=None), 3.0) == 3.0
    assert obs.see(held_by("b", T0 + timedelta(seconds=2), rv=None), 4.0) == 4.0
    assert obs.see(held_by("b", T0 + timedelta(seconds=2), rv=None), 9.0) == 4.0


def test_the_first_observation_starts_at_the_first_look_even_of_an_absent_lease():
    obs = LeaseObserver()
    assert obs.see(None, 42.0) == 42.0


def test_a_write_keeps_what_others_put_on_the_lease():
    obj = {
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "x", "namespace": "ns", "resourceVersion": "9", "uid": "u1",
                     "labels": {"team": "net"}, "finalizers": ["example.com/keep"],
                     "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                          "name": "owner", "uid": "u2"}],
                     "annotations": {"theirs": "1", ANNOTATION_POD: "old"},
                     "managedFields": [{"manager": "kubectl"}]},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 10, "leaseTransitions": 2,
                 "renewTime": "2026-03-01T12:00:00.000001Z", "strategy": "Future"},
    }
    rec = LeaseRecord.from_object(obj)
    out = acquired(rec, "me", now_wall=T0, duration_s=4,
                   annotations={ANNOTATION_POD: "pod-me"}).to_object("x", "ns")
    meta = out["metadata"]
    assert meta["labels"] == {"team": "net"} and meta["finalizers"] == ["example.com/keep"]
    assert meta["ownerReferences"][0]["name"] == "owner" and meta["uid"] == "u1"
    assert meta["annotations"] == {"theirs": "1", ANNOTATION_POD: "pod-me"}
    assert meta["resourceVersion"] == "9" and "managedFields" not in meta
    assert out["spec"]["strategy"] == "Future"  # a spec field we do not know survives
    assert out["spec"]["holderIdentity"] == "me" and out["spec"]["leaseTransitions"] == 3
    # releasing drops only holderIdentity
    rel = released(LeaseRecord.from_object(out), now_wall=T0).to_object("x", "ns")
    assert "holderIdentity" not in rel["spec"] and rel["metadata"]["labels"] == {"team": "net"}


def test_a_lease_without_duration_is_expired_like_client_go_reads_it():
    rec = LeaseRecord("a", None, T0, T0, 0, "1")
    assert verdict(rec).standing is Standing.EXPIRED


# ------------------------------------------------------------------ writes
def test_create_starts_at_zero_transitions():
    new = acquired(None, "me", now_wall=T0, duration_s=10, annotations={"k": "v"})
    assert (new.holder, new.transitions, new.duration_s) == ("me", 0, 10)
    assert new.acquire_time == new.renew_time == T0 and new.resource_version is None


def test_renewal_keeps_transitions_and_acquire_time_and_the_resource_version():
    rec = held_by("me", T0, transitions=7)
    later = T0 + timedelta(seconds=2)
    new = acquired(rec, "me", now_wall=later, duration_s=10, annotations={})
    assert new.transitions == 7 and new.acquire_time == rec.acquire_time
    assert new.renew_time == later and new.resource_version == "5"


def test_takeover_increments_transitions_and_stamps_acquire_time():
    rec = held_by("a", T0, transitions=7)
    later = T0 + timedelta(seconds=30)
    new = acquired(rec, "me", now_wall=later, duration_s=10, annotations={ANNOTATION_POD: "p"})
    assert new.holder == "me" and new.transitions == 8
    assert new.acquire_time == new.renew_time == later
    assert new.resource_version == "5"  # the update stays conditional
    assert new.annotations[ANNOTATION_POD] == "p"


def test_release_clears_the_holder_keeps_transitions_and_the_next_holder_increments():
    rec = held_by("me", T0, transitions=4)
    rel = released(rec, now_wall=T0 + timedelta(seconds=1))
    assert rel.holder is None and rel.transitions == 4 and rel.duration_s == 1
    assert "holderIdentity" not in rel.to_object("x", "ns")["spec"]
    assert rel.annotations == rec.annotations  # who held it last stays as history
    assert verdict(rel, me="b").standing is Standing.FREE
    nxt = acquired(rel, "b", now_wall=T0 + timedelta(seconds=2), duration_s=10, annotations={})
    assert nxt.transitions == 5


# ------------------------------------------------------------------ outage policy
def test_demote_policy_never_keeps():
    keep, left = outage_verdict(OutagePolicy.DEMOTE, now_mono=0.0, valid_until=10.0,
                                decision_latency_s=1.0)
    assert not keep and left == 10.0


def test_failsafe_keeps_until_the_next_decision_would_come_too_late():
    args = {"valid_until": 10.0, "decision_latency_s": 3.2}
    assert outage_verdict(OutagePolicy.FAILSAFE, now_mono=0.0, **args) == (True, 10.0)
    assert outage_verdict(OutagePolicy.FAILSAFE, now_mono=6.7, **args)[0] is True
    assert outage_verdict(OutagePolicy.FAILSAFE, now_mono=6.8, **args)[0] is False
    assert outage_verdict(OutagePolicy.FAILSAFE, now_mono=12.0, **args) == (False, -2.0)


# ------------------------------------------------------------------ names
@pytest.mark.parametrize(("name", "lease", "label"), [
    ("vhid7", "vip-sidecar-vhid7", "vhid7"),
    ("Ingress VIP_1", "vip-sidecar-ingress-vip-1", "Ingress-VIP_1"),
    ("--x--", "vip-sidecar-x", "x"),
    ("", "vip-sidecar-vip", "vip"),
])
def test_names_derived_from_the_vip_name_are_valid_kubernetes_names(name, lease, label):
    assert dns_name(name, "vip-sidecar-") == lease
    assert label_name(name) == label


def test_long_names_are_cut_to_the_kubernetes_limits():
    assert len(dns_name("a" * 400, "vip-sidecar-")) == 253
    assert len(label_name("b" * 100)) == 63
