"""Faults injected on the wire in front of moto (throttling, 5xx, UnauthorizedOperation,
slow answers) while two real sidecar daemons elect a master (issue 4, must-show 3)."""

import time

import pytest

from tests.awsfakes.bed import events, wait_owner
from tests.integration.harness import NETNS, wait_for

pytestmark = [NETNS, pytest.mark.netns]
MODE = "secondary-ip"
ASSIGN = "AssignPrivateIpAddresses"


@pytest.fixture
def bed(make_aws_bed):
    return make_aws_bed()


@pytest.mark.parametrize("kind", ["throttle", "5xx"])
def test_throttling_and_5xx_are_retried_and_the_move_succeeds(bed, kind):
    a_ip = bed.hosts[0].ip
    # mutating calls have no botocore retries (issue 17): the provider's loop retries
    # each failure itself, against the claim's deadline
    fault = bed.moto.injector.add(ASSIGN, kind, count=4, client=a_ip)
    # a retry starts only if a whole attempt (connect + read timeout) still fits before
    # the claim's deadline: keep the attempt short so four retries fit on a loaded host
    a = bed.start(0, MODE, advskew=0, name="a", read_timeout=2)
    # b only once a is elected: on a loaded host b's daemon can come up first and win
    wait_for(lambda: a.became("MASTER"), 20, what="a MASTER")
    b = bed.start(1, MODE, advskew=50, name="b", read_timeout=2)
    wait_owner(bed, MODE, bed.eni(0), 20)
    assert fault.hits == 4
    calls = bed.moto.injector.calls(ASSIGN, a_ip)
    assert [c.fault for c in calls] == [kind] * 4 + [None]
    retried = wait_for(lambda: events(a, "aws_call_retried"), 5, what="retry summary")[-1]
    assert retried["op"] == ASSIGN
    assert retried["botocore_retries"] == 0 and retried["loop_retries"] == 4
    code = "RequestLimitExceeded" if kind == "throttle" else "InternalError"
    assert [e["code"] for e in events(a, "aws_retry")] == [code] * 4
    span = calls[-1].at - calls[0].at
    print(f"\n{kind}: {len(calls)} {ASSIGN} requests over {span:.2f}s "
          f"(no botocore retries on a mutating call, 4 provider retries)")
    wait_for(lambda: b.state() == "BACKUP", 15, what="b BACKUP")
    assert a.state() == "MASTER" and b.became("MASTER") is None
    assert a.vip()["counters"]["provider_failures"] == {}


def test_unauthorized_demotes_with_the_iam_action_named_and_the_peer_takes_over(bed):
    a_ip = bed.hosts[0].ip
    bed.moto.injector.add(ASSIGN, "unauthorized", count=None, client=a_ip)
    a = bed.start(0, MODE, advskew=0, name="a")
    b = bed.start(1, MODE, advskew=50, name="b")
    wait_for(lambda: events(a, "demote"), 12, what="a demotes")
    wait_for(lambda: b.state() == "MASTER", 8, what="b MASTER")
    wait_owner(bed, MODE, bed.eni(1), 10)
    demote = events(a, "demote")[0]
    assert "ec2:AssignPrivateIpAddresses" in demote["message"]
    assert "UnauthorizedOperation" in demote["message"]
    failure = next(e for e in a.events() if e.get("event") == "provider_failure")
    assert "not retried" in failure["error"]
    # never retried: exactly one request per promotion of a
    promotions = [t for t in a.transitions() if t[1] == "MASTER"]
    assert len(bed.moto.injector.calls(ASSIGN, a_ip)) == len(promotions) >= 1
    time.sleep(2)
    assert a.state() == "BACKUP" and b.state() == "MASTER"
    assert bed.owner(MODE) == bed.eni(1)


def test_a_slow_ec2_call_blocks_neither_adverts_nor_the_election(bed):
    a_ip = bed.hosts[0].ip
    delay = 4.0
    bed.moto.injector.add(ASSIGN, "delay", count=1, client=a_ip, delay_s=delay)
    a = bed.start(0, MODE, advskew=0, name="a")
    b = bed.start(1, MODE, advskew=50, name="b")
    wait_for(lambda: bed.moto.injector.calls(ASSIGN, a_ip), 10, what="a's slow call")
    sent0 = a.vip()["counters"]["adverts_sent"]
    time.sleep(2.5)
    sent1 = a.vip()["counters"]["adverts_sent"]
    assert bed.owner(MODE) is None  # the call is still hanging
    assert sent1 - sent0 >= 2, (sent0, sent1)
    assert b.state() == "BACKUP" and b.became("MASTER") is None
    wait_owner(bed, MODE, bed.eni(0), 10)
    claimed = wait_for(lambda: events(a, "aws_claimed"), 5, what="claim logged")[-1]
    print(f"\nslow call: adverts {sent0}->{sent1} in 2.5s while the call hung; "
          f"claim effective after {claimed['effective_s']}s")
    assert claimed["effective_s"] >= delay - 0.5
    assert b.became("MASTER") is None and a.state() == "MASTER"
