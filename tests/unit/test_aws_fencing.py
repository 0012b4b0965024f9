"""The aws provider under EC2's eventual consistency (issue 17): fence before move, a
foreign change confirmed by a second read, epoch ties broken by holder, no mutation after
demotion, never unassign on AWS, bounded calls, one bounded tag per VIP and its budget,
reads by VIP and by claim. Against the hand-written EC2 double with a seeded lag model
and a fake clock: nothing sleeps for real."""

from __future__ import annotations

import asyncio

import pytest

from tests.awsfakes import forget_clients
from tests.awsfakes.fake_ec2 import FakeClock, FakeEc2, LagModel, client_error
from tests.unit.test_aws_provider import ROUTE_VIP, VIP, make
from vip_sidecar.providers.aws.api import ClientSettings, Ec2Api, SharedClient, imds_config
from vip_sidecar.providers.aws.errors import (
    AwsFenceLost,
    AwsNotOwner,
    AwsRetryExhausted,
    AwsTagBudgetError,
    translate,
)
from vip_sidecar.providers.aws.imds import region_of_zone
from vip_sidecar.providers.aws.modes import TAG_VALUE_MAX, Claim, Fence, bound_holder
from vip_sidecar.providers.aws.options import parse_options
from vip_sidecar.providers.base import ErrorKind, ProviderConfigError, VipContext

KEY = f"vip-sidecar/{VIP}"


@pytest.fixture(autouse=True)
def _fresh_clients():
    forget_clients()
    yield
    forget_clients()


def ctx(p, node="n1", is_master=lambda: True) -> VipContext:
    return VipContext(p.vip, node, is_master=is_master)


def mutating_ops(ec2: FakeEc2, since: int = 0) -> list[str]:
    return [op for op, params in ec2.calls[since:]
            if not op.startswith("Describe") and not params.get("DryRun")]


# -- (1) fence before move -------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["secondary-ip", "eip", "route"])
async def test_the_claim_is_written_before_the_move(mode):
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    extra: dict = {}
    vip = VIP
    if mode == "eip":
        extra["allocation_id"] = ec2.add_address().allocation_id
    if mode == "route":
        extra["route_table_ids"] = [ec2.add_table(1).table_id, ec2.add_table(2).table_id]
        vip = ROUTE_VIP
    p, _ = make(ec2, a.eni_id, mode=mode, vip=vip, **extra)
    await p.init()
    await p.up(ctx(p))
    ops = mutating_ops(ec2)
    move = {"secondary-ip": "AssignPrivateIpAddresses", "eip": "AssociateAddress",
            "route": "CreateRoute"}[mode]
    assert ops[0] == "CreateTags" and move in ops, ops
    assert ops.index("CreateTags") < ops.index(move)


async def test_old_master_does_not_take_back_a_move_whose_claim_is_not_visible_yet():
    """The new master's move shows before its claim: the old master must wait for a
    second read instead of re-asserting (which used to fence the rightful master off)."""
    clock = FakeClock()
    lag = LagModel(clock, max_s=0.0)
    ec2 = FakeEc2(lag=lag)
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    pa, _ = make(ec2, a.eni_id)
    pb, _ = make(ec2, b.eni_id)
    for p in (pa, pb):
        p.clock, p.sleep = clock, clock.sleep
    await pa.init()
    await pb.init()
    await pa.up(ctx(pa, "n1"))
    # b's claim (CreateTags) takes 2 s to show, its move (Assign) shows at once
    lag.max_s = 0.0
    orig = lag.record

    def record(resource, aspect, old, delay=None):
        orig(resource, aspect, old, 2.0 if aspect == "tags" else 0.0)

    lag.record = record  # type: ignore[method-assign]
    await pb.up(ctx(pb, "n2"))
    assert ec2.holders(VIP) == [b.eni_id]
    # back to 0.1 s after b wrote its claim: the move shows, the claim does not yet
    clock.now = min(w.visible_at for w in lag.pending
                    if w.aspect == "tags" and w.resource == b.eni_id) - 1.9
    since = len(ec2.calls)
    with pytest.raises(AwsFenceLost, match="epoch 2"):
        await pa.check(ctx(pa, "n1"))
    assert mutating_ops(ec2, since) == []  # no Assign, no CreateTags by the old master
    assert ec2.holders(VIP) == [b.eni_id]


async def test_a_drift_gone_on_the_second_read_is_not_repaired():
    clock = FakeClock()
    ec2 = FakeEc2(lag=LagModel(clock, max_s=0.0))
    a = ec2.add_eni(1)
    p, _ = make(ec2, a.eni_id, drift_confirm=2)
    p.clock, p.sleep = clock, clock.sleep
    await p.init()
    await p.up(ctx(p))
    # a lagging read shows our ENI without the address for 1 s, then it is back
    ec2.lag.record(a.eni_id, "secondaries", [], delay=1.0)
    since = len(ec2.calls)
    assert await p.check(ctx(p)) is False
    assert mutating_ops(ec2, since) == [] and p.transient_drifts == 1 and p.drifts == 0
    assert 2.0 in clock.slept


def test_epoch_ties_are_broken_by_holder_the_same_way_everywhere():
    low = Fence("vip-sidecar/", VIP, "n1/eni-a")  # type: ignore[arg-type]
    high = Fence("vip-sidecar/", VIP, "n2/eni-b")  # type: ignore[arg-type]
    assert high.claim(5) > low.claim(5) and low.claim(6) > high.claim(5)
    assert high.read(high.tags(5)) == Claim(5, "n2/eni-b")


async def test_a_tie_in_epoch_fences_the_lower_holder_off():
    ec2 = FakeEc2()
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p, "n1"))
    assert p.epoch == 1
    b.tags[KEY] = f"1:n2/{b.eni_id}"  # a split brain: b claimed the same epoch
    with pytest.raises(AwsFenceLost):
        await p.check(ctx(p, "n1"))


async def test_a_check_still_running_after_demotion_changes_nothing():
    clock = FakeClock()
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    p, _ = make(ec2, a.eni_id)
    p.clock, p.sleep = clock, clock.sleep
    await p.init()
    master = [True]
    c = ctx(p, is_master=lambda: master[0])
    await p.up(c)
    a.secondaries.remove(VIP)  # drift: the check would repair it after drift_confirm
    real_sleep = clock.sleep

    async def demoted_meanwhile(seconds: float) -> None:
        master[0] = False  # a better master was heard while the check waited
        await real_sleep(seconds)

    p.sleep = demoted_meanwhile
    since = len(ec2.calls)
    assert await p.check(c) is False
    assert mutating_ops(ec2, since) == [] and p.ignored_checks == 1


async def test_no_mutating_call_once_not_owner_and_none_without_time_for_one_attempt():
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    clock = FakeClock()
    api = Ec2Api(ec2, clock=clock, sleep=clock.sleep, attempt_s=5.0)
    args = {"NetworkInterfaceId": a.eni_id, "PrivateIpAddresses": [VIP],
            "AllowReassignment": True}
    with pytest.raises(AwsRetryExhausted, match="one attempt may take 5s"):
        await api.call("AssignPrivateIpAddresses", clock() + 4, "move", **args)
    api.still_owner = lambda: False
    with pytest.raises(AwsNotOwner):
        await api.call("AssignPrivateIpAddresses", clock() + 60, "move", **args)
    assert ec2.count("AssignPrivateIpAddresses") == 0
    # reads are not mutations: still allowed
    await api.call("DescribeNetworkInterfaces", clock() + 60, NetworkInterfaceIds=[a.eni_id])


async def test_mutating_calls_use_the_client_without_botocore_retries():
    reads, once = FakeEc2(), FakeEc2()
    for ec2 in (reads, once):
        ec2.add_eni(1)
    clock = FakeClock()
    api = Ec2Api(reads, clock=clock, sleep=clock.sleep, attempt_s=2.0, mutating_client=once)
    await api.call("DescribeNetworkInterfaces", clock() + 10)
    await api.call("CreateTags", clock() + 10, Resources=["eni-00000000000000001"],
                   Tags=[{"Key": "k", "Value": "v"}])
    assert [op for op, _ in reads.calls] == ["DescribeNetworkInterfaces"]
    assert [op for op, _ in once.calls] == ["CreateTags"]
    # a retried mutation needs room for a whole attempt: it gives up with the real error
    once.fail("CreateTags", *[client_error("InternalError", 500)] * 50)
    with pytest.raises(AwsRetryExhausted, match="InternalError"):
        await api.call("CreateTags", clock() + 6, Resources=["eni-00000000000000001"],
                       Tags=[{"Key": "k", "Value": "v"}])
    assert clock() <= 1000 + 6 - 2.0 + 2.0


async def test_a_read_is_abandoned_at_the_deadline(monkeypatch):
    monkeypatch.setattr("vip_sidecar.providers.aws.api.READ_GRACE_S", 0.01)

    class Slow:
        def describe_addresses(self, **params):
            import time
            time.sleep(0.3)
            return {}

    api = Ec2Api(Slow())
    loop = asyncio.get_running_loop()
    with pytest.raises(AwsRetryExhausted):
        await api.call("DescribeAddresses", loop.time() + 0.05)


def test_timeouts_are_validated_against_each_other():
    with pytest.raises(ProviderConfigError, match=r"x max_attempts \(21s\)"):
        parse_options({"mode": "eip", "read_timeout": 5}, 30.0)
    with pytest.raises(ProviderConfigError, match="verify_timeout \\+ drift_confirm \\+ 1s"):
        parse_options({"mode": "eip", "verify_timeout": 20, "drift_confirm": 10}, 30.0)
    with pytest.raises(ProviderConfigError, match="must be below reassert_interval"):
        parse_options({"mode": "eip", "drift_confirm": 5, "reassert_interval": 4}, 30.0)
    assert parse_options({"mode": "eip"}, 30.0).drift_confirm == 3.0


# -- (2) secondary-ip never unassigns on AWS ----------------------------------------------------
async def test_a_stale_duplicate_is_never_unassigned_on_aws():
    """The old master's view: its own (stale) copy and the new master's copy. On AWS the
    second listing is a stale read; removing 'the duplicate' would leave no owner."""
    ec2 = FakeEc2("moto")  # state with the address listed twice, as a stale read shows it
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    b.secondaries.append(VIP)
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.count("UnassignPrivateIpAddresses") == 0
    assert ec2.holders(VIP) == [a.eni_id, b.eni_id]


async def test_emulator_mode_removes_copies_but_a_forbidden_one_does_not_fail_up():
    ec2 = FakeEc2("moto")
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    b.secondaries.append(VIP)
    ec2.fail("UnassignPrivateIpAddresses", client_error("UnauthorizedOperation", 403))
    p, _ = make(ec2, a.eni_id, emulator_compat=True)
    await p.init()
    await p.up(ctx(p))  # must not raise: the copy is on an ENI the role may not touch
    assert ec2.count("UnassignPrivateIpAddresses") == 1
    assert a.eni_id in ec2.holders(VIP)


# -- (4) one bounded tag per VIP, stale ones removed, the budget ---------------------------------
async def test_one_tag_per_vip_and_the_legacy_pair_is_removed():
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    a.tags.update({f"{KEY}/epoch": "3", f"{KEY}/holder": "old", "Name": "keep"})
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert p.epoch == 4  # the legacy claim was read
    assert a.tags == {"Name": "keep", KEY: f"4:n1/{a.eni_id}"}


def test_the_tag_value_is_bounded_and_long_names_stay_distinct():
    h1 = bound_holder("x" * 400 + "1", "eni-0123456789abcdef0")
    h2 = bound_holder("x" * 400 + "2", "eni-0123456789abcdef0")
    fence = Fence("vip-sidecar/", VIP, h1)  # type: ignore[arg-type]
    value = fence.value(10**19)
    assert len(value) <= TAG_VALUE_MAX and h1 != h2 and h1.endswith("/eni-0123456789abcdef0")
    assert fence.read(fence.tags(10**19)) == Claim(10**19, h1)


async def test_tag_limit_exceeded_is_a_permanent_clearly_reported_error():
    err = translate(client_error("TagLimitExceeded"), "CreateTags", "write fencing epoch")
    assert isinstance(err, AwsTagBudgetError) and err.kind is ErrorKind.PERMANENT
    assert "50 tags" in str(err) and "not retried" in str(err)
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    a.tags.update({f"t{i}": "x" for i in range(50)})
    p, _ = make(ec2, a.eni_id)
    await p.init()
    with pytest.raises(AwsTagBudgetError):
        await p.up(ctx(p))
    assert ec2.count("CreateTags") == 1 and ec2.count("AssignPrivateIpAddresses") == 0


async def test_preflight_counts_the_tag_budget():
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    a.tags.update({f"t{i}": "x" for i in range(49)})
    p, _ = make(ec2, a.eni_id)
    await p.init()
    lines = await p.preflight()
    assert (True, f"tag budget: {a.eni_id} carries 50 of 50 tags with the fencing tag") in lines
    a.tags["t49"] = "x"
    q, _ = make(ec2, a.eni_id)
    await q.init()
    bad = [t for ok, t in await q.preflight() if not ok and "tag budget" in t]
    assert bad and "51 of 50" in bad[0]


# -- (5) reads by VIP and by claim -----------------------------------------------------------
async def test_secondary_ip_reads_query_by_vip_and_by_claim_not_the_subnet():
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    for n in range(2, 40):
        ec2.add_eni(n)  # a busy subnet
    p, _ = make(ec2, a.eni_id)
    await p.init()
    since = len(ec2.calls)
    await p.up(ctx(p))
    describes = [params for op, params in ec2.calls[since:] if op == "DescribeNetworkInterfaces"]
    names = [sorted(f["Name"] for f in d["Filters"]) for d in describes]
    assert names[:2] == [["addresses.private-ip-address", "subnet-id"], ["subnet-id", "tag-key"]]
    assert all(len(n) == 2 for n in names)  # never the subnet alone


# -- (7) the smaller items ----------------------------------------------------------------------
def test_region_from_local_and_wavelength_zones():
    assert region_of_zone("us-east-1a") == "us-east-1"
    assert region_of_zone("us-west-2-lax-1a") == "us-west-2"
    assert region_of_zone("us-east-1-wl1-bos-wlz-1") == "us-east-1"


def test_botocore_credential_fetch_uses_the_configured_imds():
    assert imds_config("http://169.254.169.254") == {}
    assert imds_config("http://[fd00:ec2::254]") == {
        "ec2_metadata_service_endpoint": "http://[fd00:ec2::254]",
        "ec2_metadata_service_endpoint_mode": "ipv6"}
    settings = ClientSettings("eu-west-1", None, "standard", 3, 1, 2)
    assert settings.attempt_s == 3


def test_shared_client_falls_back_to_one_client():
    assert SharedClient("c", None).mutating == "c"
