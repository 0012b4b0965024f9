"""The aws provider with an IPv6 VIP against the hand-written EC2 double (EC2's IPv6
semantics: no reassignment, an address held elsewhere is refused; describe lag; queued
errors) and a fake clock: no network, no real sleeping."""

from __future__ import annotations

import pytest

from tests.awsfakes import forget_clients
from tests.awsfakes.fake_ec2 import FakeEc2, LagModel, client_error

# the autouse fixture that resets the process-wide EC2 clients comes along
from tests.unit.test_aws_provider import _fresh_clients, ctx, make  # noqa: F401
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsFenceLost

VIP6 = "2001:db8:0:1::100"


def make6(ec2: FakeEc2, eni_id: str, **opts):
    return make(ec2, eni_id, vip=VIP6, srcip="2001:db8:0:1::1", **opts)


async def test_takeover_unassigns_the_old_holder_then_assigns():
    ec2 = FakeEc2()
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    b.ipv6s.append(VIP6)
    p, _ = make6(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.ipv6_holders(VIP6) == [a.eni_id]
    moves = [(op, params.get("NetworkInterfaceId") or params["Resources"][0])
             for op, params in ec2.calls
             if op in ("CreateTags", "UnassignIpv6Addresses", "AssignIpv6Addresses")]
    # the claim first, then the old holder loses it, then we take it
    assert moves == [("CreateTags", a.eni_id), ("UnassignIpv6Addresses", b.eni_id),
                     ("AssignIpv6Addresses", a.eni_id)]
    assert a.tags == {f"vip-sidecar/{VIP6}": f"1:n1/{a.eni_id}"}


async def test_refusals_while_ec2_still_sees_the_old_holder_are_retried_on_the_clock():
    ec2 = FakeEc2()
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    b.ipv6s.append(VIP6)
    in_use = client_error("InvalidIPAddress.InUse", op="AssignIpv6Addresses")
    ec2.fail("AssignIpv6Addresses", in_use, in_use)
    p, clock = make6(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.ipv6_holders(VIP6) == [a.eni_id]
    assert ec2.count("AssignIpv6Addresses") == 3
    # two backoff waits on the fake clock (0.2 s doubling, half jittered), no real sleep
    assert len(clock.slept) >= 2 and 0.1 <= clock.slept[0] <= 0.2


async def test_a_lagging_read_of_our_own_assign_neither_spins_nor_fails():
    """The read after our assign still shows the old state: the repeated assign is refused
    (the address is ours), which ends the retries; the read-back confirms the move."""
    ec2 = FakeEc2(lag_reads=3)
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    b.ipv6s.append(VIP6)
    p, _ = make6(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.ipv6_holders(VIP6) == [a.eni_id]
    assert ec2.count("AssignIpv6Addresses") <= 2


async def test_through_seeded_describe_lag_the_vip_ends_on_exactly_one_eni():
    for seed in range(5):
        forget_clients()
        ec2 = FakeEc2()
        a, b = ec2.add_eni(1), ec2.add_eni(2)
        b.ipv6s.append(VIP6)
        p, clock = make6(ec2, a.eni_id)
        ec2.lag = LagModel(clock, max_s=1.5, seed=seed)
        await p.init()
        await p.up(ctx(p))
        assert ec2.ipv6_holders(VIP6) == [a.eni_id], seed


async def test_check_repairs_a_removed_vip_and_steps_down_on_a_newer_claim():
    ec2 = FakeEc2()
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    p, _ = make6(ec2, a.eni_id, drift_confirm=1)
    await p.init()
    await p.up(ctx(p))
    a.ipv6s.remove(VIP6)  # someone unassigned it (no claim)
    assert await p.check(ctx(p)) is True
    assert ec2.ipv6_holders(VIP6) == [a.eni_id] and p.epoch == 2
    # a newer master claims and takes it: we must not unassign it back
    b.tags[f"vip-sidecar/{VIP6}"] = f"9:other/{b.eni_id}"
    a.ipv6s.remove(VIP6)
    b.ipv6s.append(VIP6)
    with pytest.raises(AwsFenceLost, match="epoch 9"):
        await p.check(ctx(p))
    assert ec2.ipv6_holders(VIP6) == [b.eni_id]
    assert ec2.count("UnassignIpv6Addresses") == 0


async def test_the_subnet_cidr_from_describe_subnets_decides_at_init():
    ec2 = FakeEc2()
    a = ec2.add_eni(1)
    ec2.subnet_ipv6_cidr = "2001:db8:0:2::/64"
    p, _ = make6(ec2, a.eni_id)
    with pytest.raises(AwsConfigError, match=r"outside subnet .*2001:db8:0:2::/64"):
        await p.init()
