"""The aws provider against a hand-written EC2 double with AWS semantics (moves, describe
lag, queued errors) and a fake clock: no network, no real sleeping."""

from __future__ import annotations

import time

import pytest

from tests.awsfakes import forget_clients
from tests.awsfakes.fake_ec2 import FakeClock, FakeEc2, client_error
from vip_sidecar.config import build_config
from vip_sidecar.providers.aws.api import SharedClient
from vip_sidecar.providers.aws.errors import (
    AwsConfigError,
    AwsFenceLost,
    AwsPermissionError,
    AwsRetryExhausted,
    AwsVerifyTimeout,
)
from vip_sidecar.providers.aws.provider import ACT_INTERVAL_S, AwsProvider
from vip_sidecar.providers.base import VipContext

VIP = "10.0.0.100"
ROUTE_VIP = "192.168.50.1"


@pytest.fixture(autouse=True)
def _fresh_clients():
    forget_clients()
    yield
    forget_clients()


def make(ec2: FakeEc2, eni_id: str, mode: str = "secondary-ip", vip: str = VIP,
         srcip: str = "10.0.0.1", **opts) -> tuple[AwsProvider, FakeClock]:
    options = {"name": "aws", "mode": mode, "region": "eu-west-1", "eni_id": eni_id,
               "endpoint_url": f"http://fake-{id(ec2)}", "connect_timeout": 1,
               "read_timeout": 1, **opts}
    cfg = build_config({"interface": "eth0", "srcip": srcip, "vhid": 1, "pass": "pw",
                        "addr": vip, "providers": [options]})
    p = AwsProvider(cfg.vips[0].providers[0], cfg.vips[0], cfg)
    clock = FakeClock()
    p.clock = clock
    p.sleep = clock.sleep
    p.client_factory = lambda settings: SharedClient(ec2, "env")
    p.imds_transport = _no_imds
    return p, clock


def _no_imds(*args):
    raise AssertionError("IMDS must not be used when eni_id and region are configured")


def ctx(p: AwsProvider, node: str = "n1") -> VipContext:
    return VipContext(p.vip, node)


async def two_nodes(semantics: str = "aws", lag: int = 0):
    ec2 = FakeEc2(semantics, lag_reads=lag)
    a, b = ec2.add_eni(1), ec2.add_eni(2)
    return ec2, a, b


# -- secondary-ip --------------------------------------------------------------------------
async def test_secondary_ip_takeover_on_aws_moves_without_unassigning():
    ec2, a, b = await two_nodes("aws")
    b.secondaries.append(VIP)
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [a.eni_id]
    assert ec2.count("AssignPrivateIpAddresses") == 1
    assert ec2.count("UnassignPrivateIpAddresses") == 0  # AWS moved it: nothing to clean
    # one tag per VIP: <epoch>:<holder>
    assert a.tags == {f"vip-sidecar/{VIP}": f"1:n1/{a.eni_id}"}


async def test_secondary_ip_takeover_with_duplicating_semantics_removes_the_copy():
    ec2, a, b = await two_nodes("moto")
    b.secondaries.append(VIP)
    b.tags[f"vip-sidecar/{VIP}/epoch"] = "4"  # a claim in the older two-tag format
    p, _ = make(ec2, a.eni_id, emulator_compat=True)
    await p.init()
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [a.eni_id]
    unassign = [params for op, params in ec2.calls if op == "UnassignPrivateIpAddresses"]
    assert unassign == [{"NetworkInterfaceId": b.eni_id, "PrivateIpAddresses": [VIP]}]
    assert p.epoch == 5  # max(seen) + 1


async def test_describe_lag_is_waited_out_without_repeating_the_move():
    ec2, a, b = await two_nodes("aws", lag=3)
    b.secondaries.append(VIP)
    p, clock = make(ec2, a.eni_id)
    await p.init()
    start = time.monotonic()
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [a.eni_id]
    # the stale reads did not trigger a second assignment (act_interval not reached)
    assert ec2.count("AssignPrivateIpAddresses") == 1
    assert sum(clock.slept) < ACT_INTERVAL_S
    assert time.monotonic() - start < 2.0  # fake clock: nothing slept for real


async def test_a_move_that_never_shows_times_out_and_is_repeated_at_act_interval():
    ec2, a, _ = await two_nodes("stuck")
    p, clock = make(ec2, a.eni_id, verify_timeout=12)
    await p.init()
    t0 = clock()
    with pytest.raises(AwsVerifyTimeout, match="does not show"):
        await p.up(ctx(p))
    assert clock() - t0 == pytest.approx(12, abs=0.01)
    # first at once, then about every ACT_INTERVAL_S while the reads disagree
    assert 3 <= ec2.count("AssignPrivateIpAddresses") <= 12 / ACT_INTERVAL_S + 1


async def test_unassign_of_an_already_moved_copy_is_tolerated():
    ec2, a, b = await two_nodes("moto")
    b.secondaries.append(VIP)
    ec2.fail("UnassignPrivateIpAddresses", client_error("InvalidParameterValue"))
    p, _ = make(ec2, a.eni_id, emulator_compat=True)
    await p.init()
    # the first unassign says "not there"; the next read still shows the copy (moto), so
    # it is removed by a later attempt, and the result is still exactly one holder
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [a.eni_id]


def fake_imds(values: dict[str, str], log: list[tuple[str, str]]):
    def transport(method, url, headers, timeout):
        log.append((method, url))
        if method == "PUT":
            return 200, b"tok"
        assert headers == {"X-aws-ec2-metadata-token": "tok"}
        path = url.split("/latest/", 1)[1]
        return (200, values[path].encode()) if path in values else (404, b"")

    return transport


def imds_values(eni: str, mac: str, subnet_cidr: str = "10.0.0.0/24") -> dict[str, str]:
    base = f"meta-data/network/interfaces/macs/{mac}/"
    return {
        "meta-data/instance-id": "i-00000000000000001",
        "meta-data/placement/region": "eu-west-1",
        base + "interface-id": eni,
        base + "subnet-id": "subnet-0000000a",
        base + "vpc-id": "vpc-0000000a",
        base + "local-ipv4s": "10.0.0.1\n10.0.0.100",
        base + "subnet-ipv4-cidr-block": subnet_cidr,
        base + "vpc-ipv4-cidr-blocks": "10.0.0.0/16",
    }


async def test_discovery_through_imds_fills_region_instance_eni_and_subnet(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    ec2, a, _ = await two_nodes()
    log: list[tuple[str, str]] = []
    p, _ = make(ec2, a.eni_id)
    p.opts = type(p.opts)(**{**vars(p.opts), "eni_id": None, "region": None, "mac": a.mac})
    p.imds_transport = fake_imds(imds_values(a.eni_id, a.mac), log)
    p.environ = {"AWS_DEFAULT_REGION": "us-east-2"}
    await p.init()
    assert p.ident is not None
    assert (p.ident.region, p.ident.instance_id, p.ident.eni_id) == (
        "eu-west-1", "i-00000000000000001", a.eni_id)
    assert p.ident.sources["region"] == "imds" and p.ident.sources["eni_id"] == "imds"
    assert [m for m, _ in log].count("PUT") == 1  # one token for every GET
    assert any("us-east-2" in w for w in p.warnings)  # env disagrees with the instance


async def test_vip_outside_the_subnet_or_on_the_primary_ip_is_a_config_error():
    ec2, a, _ = await two_nodes()
    p, _ = make(ec2, a.eni_id, vip="10.0.9.9")
    p.opts = type(p.opts)(**{**vars(p.opts), "eni_id": None, "mac": a.mac})
    p.imds_transport = fake_imds(imds_values(a.eni_id, a.mac), [])
    with pytest.raises(AwsConfigError, match="outside subnet"):
        await p.init()
    # the config refuses addr == srcip; the provider also knows the ENI's primary IP
    q, _ = make(ec2, a.eni_id, vip=a.primary, srcip="10.0.0.254")
    with pytest.raises(AwsConfigError, match="primary IP"):
        await q.init()


# -- errors ---------------------------------------------------------------------------------
async def test_throttling_is_retried_by_the_provider_loop():
    ec2, a, _ = await two_nodes()
    ec2.fail("AssignPrivateIpAddresses",
             client_error("RequestLimitExceeded", 503, retries=2),
             client_error("RequestLimitExceeded", 503, retries=2))
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [a.eni_id]
    assert p.api is not None
    assert p.api.stats.loop_retries["AssignPrivateIpAddresses"] == 2
    assert p.api.stats.botocore_retries["AssignPrivateIpAddresses"] == 4


async def test_persistent_5xx_gives_up_at_the_deadline():
    ec2, a, _ = await two_nodes()
    ec2.fail("AssignPrivateIpAddresses", *[client_error("InternalError", 500)] * 500)
    p, clock = make(ec2, a.eni_id, verify_timeout=8)
    await p.init()
    t0 = clock()
    with pytest.raises(AwsRetryExhausted, match="InternalError"):
        await p.up(ctx(p))
    assert clock() - t0 <= 8


async def test_unauthorized_is_not_retried_and_names_the_action():
    ec2, a, _ = await two_nodes()
    ec2.fail("AssignPrivateIpAddresses", client_error("UnauthorizedOperation", 403))
    p, _ = make(ec2, a.eni_id)
    await p.init()
    with pytest.raises(AwsPermissionError) as exc:
        await p.up(ctx(p))
    assert "ec2:AssignPrivateIpAddresses" in str(exc.value)
    assert exc.value.iam_action == "ec2:AssignPrivateIpAddresses"
    assert ec2.count("AssignPrivateIpAddresses") == 1


async def test_unknown_eni_is_a_config_error_and_init_is_retried_by_up():
    ec2 = FakeEc2()
    p, _ = make(ec2, "eni-0000000000000000f")
    with pytest.raises(AwsConfigError, match=r"InvalidNetworkInterfaceID\.NotFound"):
        await p.init()
    own = ec2.add_eni(15)  # the ENI appears (e.g. attached late): up() initialises now
    await p.up(ctx(p))
    assert ec2.holders(VIP) == [own.eni_id]


# -- check / down ---------------------------------------------------------------------------
async def test_check_is_quiet_when_nothing_changed_and_repairs_drift():
    ec2, a, b = await two_nodes()
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    calls = len(ec2.calls)
    assert await p.check(ctx(p)) is False
    assert {op for op, _ in ec2.calls[calls:]} == {"DescribeNetworkInterfaces"}
    b.secondaries.append(VIP)  # someone moved it (AWS semantics: it left a)
    a.secondaries.remove(VIP)
    assert await p.check(ctx(p)) is True
    assert ec2.holders(VIP) == [a.eni_id] and p.epoch == 2 and p.drifts == 1


async def test_check_steps_down_on_a_newer_claim():
    ec2, a, b = await two_nodes()
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    b.tags.update({f"vip-sidecar/{VIP}/epoch": "7", f"vip-sidecar/{VIP}/holder": "other"})
    with pytest.raises(AwsFenceLost, match="epoch 7 > ours"):
        await p.check(ctx(p))


async def test_down_changes_nothing_in_ec2():
    ec2, a, _ = await two_nodes()
    p, _ = make(ec2, a.eni_id)
    await p.init()
    await p.up(ctx(p))
    calls = len(ec2.calls)
    await p.down(ctx(p))
    assert ec2.calls[calls:] == [] and ec2.holders(VIP) == [a.eni_id]


async def test_fencing_off_writes_no_tags():
    ec2, a, _ = await two_nodes()
    p, _ = make(ec2, a.eni_id, fencing=False)
    await p.init()
    await p.up(ctx(p))
    assert ec2.count("CreateTags") == 0 and a.tags == {}


# -- eip ------------------------------------------------------------------------------------
async def test_eip_reassociates_to_own_eni_and_private_ip():
    ec2, a, b = await two_nodes()
    addr = ec2.add_address()
    addr.eni_id, addr.private_ip = b.eni_id, b.primary
    p, _ = make(ec2, a.eni_id, mode="eip", allocation_id=addr.allocation_id)
    await p.init()
    await p.up(ctx(p))
    assert (addr.eni_id, addr.private_ip) == (a.eni_id, a.primary)
    assoc = [params for op, params in ec2.calls if op == "AssociateAddress"]
    assert assoc == [{"AllocationId": addr.allocation_id, "NetworkInterfaceId": a.eni_id,
                      "PrivateIpAddress": a.primary, "AllowReassociation": True}]
    assert addr.tags == {f"vip-sidecar/{VIP}": f"1:n1/{a.eni_id}"}


async def test_eip_found_by_public_ip_and_no_remap_when_already_here():
    ec2, a, _ = await two_nodes()
    addr = ec2.add_address()
    p, _ = make(ec2, a.eni_id, mode="eip", vip=addr.public_ip)
    await p.init()
    await p.up(ctx(p))
    assert ec2.count("AssociateAddress") == 1
    assert await p.check(ctx(p)) is False
    assert ec2.count("AssociateAddress") == 1  # remaps can be billed: never blindly


# -- route ----------------------------------------------------------------------------------
async def test_route_creates_missing_and_replaces_foreign_routes_in_every_table():
    ec2, a, b = await two_nodes()
    t1, t2 = ec2.add_table(1), ec2.add_table(2)
    t2.routes[f"{ROUTE_VIP}/32"] = b.eni_id
    p, _ = make(ec2, a.eni_id, mode="route", vip=ROUTE_VIP,
                route_table_ids=[t1.table_id, t2.table_id])
    await p.init()
    await p.up(ctx(p))
    assert t1.routes == {f"{ROUTE_VIP}/32": a.eni_id} == t2.routes
    assert [op for op, _ in ec2.calls if op.endswith("Route")] == ["CreateRoute", "ReplaceRoute"]


@pytest.mark.parametrize("present_in_read", [False, True])
async def test_route_falls_back_when_the_table_changed_since_the_read(present_in_read):
    ec2, a, _ = await two_nodes()
    t1 = ec2.add_table(1)
    p, clock = make(ec2, a.eni_id, mode="route", vip=ROUTE_VIP, route_table_ids=[t1.table_id])
    await p.init()
    if not present_in_read:
        # our read saw no route, but one appeared since: CreateRoute -> RouteAlreadyExists
        t1.routes[f"{ROUTE_VIP}/32"] = "eni-00000000000000099"
    # (else: our read saw a route that is gone now: ReplaceRoute -> InvalidParameterValue)
    assert p.mode is not None
    await p.mode._point(t1.table_id, clock() + 10, present=present_in_read)
    ops = [op for op, _ in ec2.calls if op.endswith("Route")]
    assert ops == (["CreateRoute", "ReplaceRoute"] if not present_in_read
                   else ["ReplaceRoute", "CreateRoute"])
    assert t1.routes[f"{ROUTE_VIP}/32"] == a.eni_id


async def test_route_vip_inside_the_vpc_is_rejected_at_init():
    ec2, a, _ = await two_nodes()
    t1 = ec2.add_table(1)
    p, _ = make(ec2, a.eni_id, mode="route", vip="10.0.5.5", route_table_ids=[t1.table_id])
    with pytest.raises(AwsConfigError, match=r"inside the VPC CIDR 10\.0\.0\.0/16"):
        await p.init()


async def test_route_with_source_dest_check_on_is_not_ready_until_it_is_off():
    ec2, a, _ = await two_nodes()
    t1 = ec2.add_table(1)
    a.source_dest_check = True
    p, _ = make(ec2, a.eni_id, mode="route", vip=ROUTE_VIP, route_table_ids=[t1.table_id])
    # init fails (/readyz not ready), and so does a promotion: EC2 would drop the traffic
    with pytest.raises(AwsConfigError, match="source/destination check is on"):
        await p.init()
    with pytest.raises(AwsConfigError, match="source/destination check is on"):
        await p.up(ctx(p))
    assert ec2.count("CreateRoute") == 0
    a.source_dest_check = False  # the operator turns it off: the retried init succeeds
    await p.up(ctx(p))
    assert t1.routes == {f"{ROUTE_VIP}/32": a.eni_id}


async def test_one_client_per_process():
    ec2, a, b = await two_nodes()
    p, _ = make(ec2, a.eni_id)
    q, _ = make(ec2, b.eni_id)
    made = []

    def factory(settings):
        made.append(settings)
        return SharedClient(ec2, "env")

    p.client_factory = q.client_factory = factory
    await p.init()
    await q.init()
    assert len(made) == 1 and p.client is q.client
