"""The aws provider with an IPv6 VIP, in-process against moto's HTTP server (behind the
fault wrapper) and the fake IMDS on loopback (issue 12, providers: aws).

IPv6 secondary addresses move with UnassignIpv6Addresses on the old holder, then
AssignIpv6Addresses here (EC2 has no AllowReassignment for IPv6). moto validates
nothing (one address on two ENIs, an address outside the subnet): the first tests pin
those gaps (docs/aws.md names them), the others check the provider never relies on them,
with the wrapper's EC2 semantics on (an address held elsewhere is refused) and off.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from ipaddress import ip_network

import pytest
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from tests.awsfakes.loopback import ctx, fresh_world, loopback_provider, loopback_servers
from tests.awsfakes.moto_server import FaultyMoto
from tests.awsfakes.world import World
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsVerifyTimeout
from vip_sidecar.providers.aws.provider import AwsProvider
from vip_sidecar.providers.aws.secondary import SecondaryIpMode
from vip_sidecar.providers.base import ProviderConfigError

NET = "10.78"
MACS = ["02:00:00:78:00:01", "02:00:00:78:00:02"]
ROUTE_VIP6 = "fd00:200::1"  # an overlay VIP: outside the VPC's Amazon /56


@pytest.fixture(scope="module")
def servers():
    yield from loopback_servers()


@pytest.fixture
def world(servers, monkeypatch) -> World:
    return fresh_world(*servers, monkeypatch, NET, MACS, ipv6=True)


def vip6(world: World, host: int = 0x100) -> str:
    """An address of the subnet's /64, compressed (what the provider compares)."""
    return str(ip_network(world.subnet_ipv6_cidr)[host])


def provider(servers, world: World, i: int, vip: str, mode: str = "secondary-ip",
             **opts) -> AwsProvider:
    return loopback_provider(servers, world, i, vip, MACS, f"fd00:78::{i + 1}", mode, **opts)


def order(moto: FaultyMoto, *actions: str) -> list[tuple[str, str]]:
    """(action, ENI) of the given mutating calls, in the order moto received them."""
    with moto.injector.lock:
        return [(r.action, r.params.get("NetworkInterfaceId", ""))
                for r in moto.injector.requests if r.action in actions and not r.dry_run]


# -- moto's gaps (docs/aws.md "IPv6 and moto") -----------------------------------------------
def test_moto_accepts_one_ipv6_address_on_two_enis_and_outside_the_subnet(servers, world):
    vip = vip6(world)
    for node in world.nodes:
        world.ec2.assign_ipv6_addresses(NetworkInterfaceId=node.eni_id, Ipv6Addresses=[vip])
    assert world.ipv6_holders(vip) == sorted(n.eni_id for n in world.nodes)
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=world.nodes[0].eni_id,
                                    Ipv6Addresses=["2001:db8::1"])
    assert "2001:db8::1" in world.ipv6s(world.nodes[0].eni_id)


def test_moto_lacks_the_ipv6_filters_and_misreports_the_association_state(servers, world):
    # moto raises FilterNotImplementedError; its server turns that into an HTML 500, which
    # botocore (and our retry loop) would take for a transient EC2 fault
    for call, flt in ((world.ec2.describe_network_interfaces, "ipv6-addresses.ipv6-address"),
                      (world.ec2.describe_route_tables, "route.destination-ipv6-cidr-block")):
        with pytest.raises(ResponseParserError, match="500 Internal Server Error"):
            call(Filters=[{"Name": flt, "Values": [vip6(world)]}])
    sub = world.ec2.describe_subnets(SubnetIds=[world.subnet_id])["Subnets"][0]
    state = sub["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlockState"]["State"]
    assert state == "{'State': 'associated'}"  # EC2 says "associated"


def test_the_wrapper_refuses_an_ipv6_address_held_elsewhere_like_ec2(servers, world):
    moto, _ = servers
    moto.injector.aws_semantics = True
    vip = vip6(world)
    a, b = (n.eni_id for n in world.nodes)
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=a, Ipv6Addresses=[vip])
    with pytest.raises(ClientError, match=r"InvalidIPAddress\.InUse"):
        world.ec2.assign_ipv6_addresses(NetworkInterfaceId=b, Ipv6Addresses=[vip])
    assert world.ipv6_holders(vip) == [a]


# -- secondary-ip with an IPv6 VIP --------------------------------------------------------------
@pytest.mark.parametrize("ec2_semantics", [False, True], ids=["raw-moto", "ec2-semantics"])
def test_takeover_unassigns_the_old_holder_first(servers, world, ec2_semantics):
    moto, _ = servers
    moto.injector.aws_semantics = ec2_semantics
    vip = vip6(world)
    eni_a, eni_b = (n.eni_id for n in world.nodes)
    a = provider(servers, world, 0, vip)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert world.ipv6_holders(vip) == [eni_a]
    b = provider(servers, world, 1, vip)
    asyncio.run(b.init())
    asyncio.run(b.up(ctx(b, "b")))
    # the old ENI no longer lists the address: moto would have kept both without the unassign
    assert vip not in world.ipv6s(eni_a)
    assert world.ipv6_holders(vip) == [eni_b]
    calls = order(moto, "AssignIpv6Addresses", "UnassignIpv6Addresses")
    assert calls == [("AssignIpv6Addresses", eni_a), ("UnassignIpv6Addresses", eni_a),
                     ("AssignIpv6Addresses", eni_b)]
    assert b.epoch == 2
    assert world.tags(eni_b)[f"vip-sidecar/{vip}"] == f"2:b/{eni_b}"
    # the claim was written before the address was taken from a
    with moto.injector.lock:
        kinds = [r.action for r in moto.injector.requests
                 if r.action in ("CreateTags", "UnassignIpv6Addresses")]
    assert kinds[-2:] == ["CreateTags", "UnassignIpv6Addresses"]
    # a's check sees b's newer claim and steps down instead of taking the address back
    with pytest.raises(Exception, match="fencing epoch 2 > ours"):
        asyncio.run(a.check(ctx(a, "a")))
    assert world.ipv6_holders(vip) == [eni_b]


def test_an_in_use_refusal_is_retried_until_ec2_lets_go(servers, world):
    moto, _ = servers
    moto.injector.aws_semantics = True
    vip = vip6(world)
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=world.nodes[1].eni_id,
                                    Ipv6Addresses=[vip])
    # EC2 still sees the old holder for a moment after the unassign returned
    moto.injector.add("AssignIpv6Addresses", "in_use", count=2)
    a = provider(servers, world, 0, vip)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert world.ipv6_holders(vip) == [world.nodes[0].eni_id]
    assigns = order(moto, "AssignIpv6Addresses")
    assert assigns[1:] == [("AssignIpv6Addresses", world.nodes[0].eni_id)] * 3  # 2 refused


def test_a_refusal_for_an_address_we_hold_already_ends_the_retries(servers, world):
    """A lagging read can make us assign again what EC2 already gave us: a refusal then
    must neither spin nor fail the move (the read-back decides)."""
    moto, _ = servers
    vip = vip6(world)
    a = provider(servers, world, 0, vip)
    asyncio.run(a.init())
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=world.nodes[0].eni_id,
                                    Ipv6Addresses=[vip])
    moto.injector.add("AssignIpv6Addresses", "in_use", count=None)
    before = len(moto.injector.calls("AssignIpv6Addresses"))
    assert isinstance(a.mode, SecondaryIpMode)
    asyncio.run(a.mode._assign_ipv6(a.clock() + 20))
    assert len(moto.injector.calls("AssignIpv6Addresses")) == before + 1


def test_check_removes_a_copy_moto_let_someone_put_elsewhere(servers, world):
    vip = vip6(world)
    a = provider(servers, world, 0, vip)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    world.ec2.assign_ipv6_addresses(NetworkInterfaceId=world.nodes[1].eni_id,
                                    Ipv6Addresses=[vip])
    assert asyncio.run(a.check(ctx(a, "a"))) is True
    assert world.ipv6_holders(vip) == [world.nodes[0].eni_id]


def test_waits_for_imds_ipv6s_and_refuses_a_remap_the_instance_never_sees(servers, world):
    _, imds = servers
    vip = vip6(world)
    seen: list[str] = []

    def lagging(eni_id: str) -> list[str]:
        seen.append(eni_id)
        return world.ipv6s(eni_id) if len(seen) > 3 else []  # [] = IMDS 404: no ipv6s yet

    imds.ipv6s_from = lagging
    a = provider(servers, world, 0, vip)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert len(seen) >= 4
    imds.ipv6s_from = lambda eni_id: []
    b = provider(servers, world, 1, vip, verify_timeout=2.5, connect_timeout=0.5,
                 read_timeout=1, max_attempts=1)
    asyncio.run(b.init())
    with pytest.raises(AwsVerifyTimeout, match="IMDS ipv6s lacks it"):
        asyncio.run(b.up(ctx(b, "b")))


def test_a_vip_outside_the_subnet_is_refused_although_moto_would_assign_it(servers, world):
    a = provider(servers, world, 0, "2001:db8::1")
    with pytest.raises(AwsConfigError, match=r"outside subnet .* IPv6 CIDRs"):
        asyncio.run(a.init())


def test_without_imds_the_subnet_cidr_comes_from_describe_subnets(servers, world, monkeypatch):
    """moto's association state text must not make the subnet look IPv6-less."""
    moto, imds = servers
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    node = world.nodes[0]
    before = imds.counters.puts
    a = provider(servers, world, 0, vip6(world), eni_id=node.eni_id, verify_imds=False)
    asyncio.run(a.init())
    assert imds.counters.puts == before
    assert moto.injector.calls("DescribeSubnets")
    assert a.ident is not None and [str(n) for n in a.ident.subnet_ipv6_cidrs or ()] == [
        world.subnet_ipv6_cidr]
    bad = provider(servers, world, 0, "2001:db8::1", eni_id=node.eni_id, verify_imds=False)
    with pytest.raises(AwsConfigError, match="outside subnet"):
        asyncio.run(bad.init())


def test_preflight_names_the_ipv6_calls_it_cannot_dry_run(servers, world):
    a = provider(servers, world, 0, vip6(world))
    lines = asyncio.run(a.preflight())
    texts = [t for ok, t in lines if ok]
    for op in ("AssignIpv6Addresses", "UnassignIpv6Addresses"):
        assert f"permission ec2:{op} not probed: no DryRun in this API" in texts
    assert "permission ec2:DescribeSubnets: allowed (DryRun)" in texts
    assert all(ok for ok, _ in lines), lines


# -- route and eip ------------------------------------------------------------------------------
def test_route_mode_points_a_128_at_the_master(servers, world):
    moto, _ = servers
    tables = world.route_tables
    a = provider(servers, world, 0, ROUTE_VIP6, mode="route", route_table_ids=tables)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert world.route_targets(ROUTE_VIP6) == {t: world.nodes[0].eni_id for t in tables}
    b = provider(servers, world, 1, ROUTE_VIP6, mode="route", route_table_ids=tables)
    asyncio.run(b.init())
    asyncio.run(b.up(ctx(b, "b")))
    assert world.route_targets(ROUTE_VIP6) == {t: world.nodes[1].eni_id for t in tables}
    creates, replaces = (moto.injector.calls(op) for op in ("CreateRoute", "ReplaceRoute"))
    assert len(creates) == len(replaces) == len(tables)
    assert {c.params.get("DestinationIpv6CidrBlock") for c in creates + replaces} == {
        f"{ROUTE_VIP6}/128"}
    assert not any("DestinationCidrBlock" in c.params for c in creates + replaces)


def test_route_mode_refuses_a_vip_inside_the_vpc_ipv6_cidr(servers, world):
    a = provider(servers, world, 0, vip6(world), mode="route",
                 route_table_ids=world.route_tables)
    with pytest.raises(AwsConfigError, match=f"inside the VPC CIDR {world.vpc_ipv6_cidr}"):
        asyncio.run(a.init())


def test_eip_mode_refuses_an_ipv6_vip_with_one_line(servers, world):
    with pytest.raises(ProviderConfigError) as exc:
        provider(servers, world, 0, vip6(world), mode="eip", allocation_id=world.allocation_id)
    text = str(exc.value)
    assert "\n" not in text
    assert text == (f"aws provider: mode eip cannot carry the IPv6 VIP {vip6(world)} (Elastic "
                    "IPs are IPv4 only); use mode secondary-ip or route for an IPv6 VIP")


def test_route_preflight_probes_the_ipv6_route_without_moving_it(servers, world):
    moto, _ = servers
    tables = world.route_tables
    for t in tables:
        world.ec2.create_route(RouteTableId=t, DestinationIpv6CidrBlock=f"{ROUTE_VIP6}/128",
                               NetworkInterfaceId=world.nodes[1].eni_id)
    a = provider(servers, world, 0, ROUTE_VIP6, mode="route", route_table_ids=tables)
    lines = asyncio.run(a.preflight())
    assert (True, "permission ec2:ReplaceRoute: allowed (endpoint ignored DryRun)") in lines
    probes = moto.injector.calls("ReplaceRoute", dry_run=True)
    assert {p.params.get("DestinationIpv6CidrBlock") for p in probes} == {f"{ROUTE_VIP6}/128"}
    # the probe named the current target: moto ignores DryRun, nothing moved
    assert world.route_targets(ROUTE_VIP6) == {t: world.nodes[1].eni_id for t in tables}


def test_eip_with_an_ipv6_vip_stops_the_cli_with_one_line(tmp_path):
    cfg = tmp_path / "eip.json"
    cfg.write_text(json.dumps({"providers": [{"name": "aws", "mode": "eip",
                                              "allocation_id": "eipalloc-0123456789abcdef0"}]}))
    res = subprocess.run([sys.executable, "-m", "vip_sidecar", "run", "-i", "lo", "-s",
                          "fd00::1", "-v", "1", "-p", "x", "-a", "fd00::2", "--config",
                          str(cfg)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert res.stderr.splitlines() == [
        "vip-sidecar: config error: aws provider: mode eip cannot carry the IPv6 VIP fd00::2 "
        "(Elastic IPs are IPv4 only); use mode secondary-ip or route for an IPv6 VIP"]
