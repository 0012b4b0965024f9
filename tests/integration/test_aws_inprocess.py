"""The aws provider in-process against moto's HTTP server and the fake IMDS on loopback:
no namespaces or root needed, so these run everywhere (issue 4, must-show 2 and 4)."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request

import pytest

from tests.awsfakes.loopback import ctx, fresh_world, loopback_provider, loopback_servers
from tests.awsfakes.world import World
from vip_sidecar.providers.aws.errors import AwsPermissionError, AwsVerifyTimeout
from vip_sidecar.providers.aws.imds import ImdsClient
from vip_sidecar.providers.aws.provider import AwsProvider

NET = "10.77"
MACS = ["02:00:00:77:00:01", "02:00:00:77:00:02"]
VIP = f"{NET}.0.100"


@pytest.fixture(scope="module")
def servers():
    yield from loopback_servers()


@pytest.fixture
def world(servers, monkeypatch) -> World:
    return fresh_world(*servers, monkeypatch, NET, MACS)


def provider(servers, world: World, i: int, mode: str = "secondary-ip", vip: str = VIP,
             **opts) -> AwsProvider:
    return loopback_provider(servers, world, i, vip, MACS, f"{NET}.0.{i + 1}", mode, **opts)


def test_moto_keeps_duplicates_when_reassigning(servers, world):
    """The premise of the next test: moto ignores AllowReassignment (aws.md 4.2)."""
    for node in world.nodes:
        world.ec2.assign_private_ip_addresses(NetworkInterfaceId=node.eni_id,
                                              PrivateIpAddresses=[VIP], AllowReassignment=True)
    assert world.secondary_holders(VIP) == sorted(n.eni_id for n in world.nodes)


def test_takeover_leaves_the_vip_on_exactly_one_eni(servers, world):
    moto, _ = servers
    a = provider(servers, world, 0)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert world.secondary_holders(VIP) == [world.nodes[0].eni_id]
    b = provider(servers, world, 1)
    asyncio.run(b.init())
    asyncio.run(b.up(ctx(b, "b")))
    # read both ENIs back: only b's lists the VIP
    assert world.secondary_holders(VIP) == [world.nodes[1].eni_id]
    unassigned = moto.injector.calls("UnassignPrivateIpAddresses")
    assert [u.params["NetworkInterfaceId"] for u in unassigned] == [world.nodes[0].eni_id]
    assert b.epoch == 2
    tags = world.tags(world.nodes[1].eni_id)
    assert tags[f"vip-sidecar/{VIP}"] == f"2:b/{world.nodes[1].eni_id}"
    # a's periodic check now sees b's newer claim and refuses to take the VIP back
    with pytest.raises(Exception, match="fencing epoch 2 > ours"):
        asyncio.run(a.check(ctx(a, "a")))
    assert world.secondary_holders(VIP) == [world.nodes[1].eni_id]


def test_duplicate_left_by_someone_else_is_repaired_by_check(servers, world):
    a = provider(servers, world, 0)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert asyncio.run(a.check(ctx(a, "a"))) is False
    # a stale copy appears on the other ENI (no fencing claim): drift, repaired
    world.ec2.assign_private_ip_addresses(NetworkInterfaceId=world.nodes[1].eni_id,
                                          PrivateIpAddresses=[VIP], AllowReassignment=True)
    assert asyncio.run(a.check(ctx(a, "a"))) is True
    assert world.secondary_holders(VIP) == [world.nodes[0].eni_id]
    assert a.drifts == 1 and a.epoch == 2


def test_denied_assign_is_not_retried_and_names_the_action(servers, world):
    moto, _ = servers
    moto.injector.add("AssignPrivateIpAddresses", "unauthorized", count=None)
    a = provider(servers, world, 0)
    asyncio.run(a.init())
    with pytest.raises(AwsPermissionError, match="ec2:AssignPrivateIpAddresses"):
        asyncio.run(a.up(ctx(a, "a")))
    assert len(moto.injector.calls("AssignPrivateIpAddresses")) == 1


def test_region_from_availability_zone_when_imds_has_no_region(servers, world):
    _, imds = servers
    a = provider(servers, world, 0, mode="eip", allocation_id=world.allocation_id)
    assert imds.default is not None
    imds.default.publish_region = False
    asyncio.run(a.init())
    assert a.ident is not None and a.ident.region == "eu-west-1"
    assert a.ident.sources["region"] == "imds"


def test_explicit_ids_need_no_imds(servers, world, monkeypatch):
    _, imds = servers
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # boto3 alone would ignore AWS_REGION
    imds.hang_put = True  # any IMDS use would stall
    node = world.nodes[0]
    a = provider(servers, world, 0, mode="route", vip="192.168.200.7",
                 route_table_ids=world.route_tables, eni_id=node.eni_id)
    before = imds.counters.puts
    asyncio.run(a.init())
    assert imds.counters.puts == before
    assert a.ident is not None and a.ident.sources["region"] == "environment"
    assert a.ident.instance_id == node.instance_id  # from DescribeNetworkInterfaces


# -- the IMDS client against the token-checking server -------------------------------------
def test_imds_server_rejects_requests_without_a_token(servers, world):
    _, imds = servers
    imds.default = world.imds_instance(world.nodes[0])
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(imds.url + "/latest/meta-data/instance-id", timeout=2)
    assert exc.value.code == 401


def test_imds_client_caches_the_token_and_refetches_once_on_401(servers, world):
    _, imds = servers
    node = world.nodes[0]
    imds.default = world.imds_instance(node)
    client = ImdsClient(endpoint=imds.url, timeout=1.0)
    puts = imds.counters.puts
    assert client.instance_id() == node.instance_id
    assert client.region() == "eu-west-1"
    info = client.interface(node.mac)
    assert info["interface-id"] == node.eni_id and info["subnet-id"] == world.subnet_id
    assert imds.counters.puts == puts + 1  # one token for all the GETs
    imds.revoke_tokens()
    assert client.instance_id() == node.instance_id
    assert imds.counters.puts == puts + 2
    assert client.stats.token_refetches_on_401 == 1


def test_imds_hop_limit_falls_back_to_the_eni_by_mac_and_preflight_warns(servers, world,
                                                                        monkeypatch):
    _, imds = servers
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    imds.hang_put = True
    node = world.nodes[0]
    ec2_mac = world.ec2.describe_network_interfaces(
        NetworkInterfaceIds=[node.eni_id])["NetworkInterfaces"][0]["MacAddress"]
    a = provider(servers, world, 0, mac=ec2_mac, imds_timeout=0.2, imds_attempts=1)
    lines = asyncio.run(a.preflight())
    assert a.ident is not None and a.ident.eni_id == node.eni_id
    assert a.ident.sources["eni_id"] == "describe(mac-address)"
    assert a.ident.sources["region"] == "environment"
    assert any("hop limit" in w for w in a.warnings)
    assert (True, f"warning: IMDSv2 at {imds.url} gave no token; identity came from options "
                  "and EC2 instead") in lines


def test_secondary_ip_waits_until_imds_shows_the_remap(servers, world):
    moto, imds = servers
    seen: list[str] = []

    def lagging(eni_id: str) -> list[str]:
        seen.append(eni_id)
        # the instance learns about the new address a few polls after EC2 says so
        return world.local_ipv4s(eni_id) if len(seen) > 3 else [world.nodes[0].private_ip]

    imds.local_ipv4s_from = lagging
    a = provider(servers, world, 0)
    asyncio.run(a.init())
    asyncio.run(a.up(ctx(a, "a")))
    assert len(seen) >= 4 and set(seen) == {world.nodes[0].eni_id}
    assert len(moto.injector.calls("AssignPrivateIpAddresses")) == 1


def test_secondary_ip_that_never_reaches_the_instance_is_not_claimed(servers, world):
    _, imds = servers
    imds.local_ipv4s_from = lambda eni_id: [world.nodes[0].private_ip]
    a = provider(servers, world, 0, verify_timeout=2.5, connect_timeout=0.5, read_timeout=1,
                 max_attempts=1)
    asyncio.run(a.init())
    with pytest.raises(AwsVerifyTimeout, match="IMDS local-ipv4s lacks it"):
        asyncio.run(a.up(ctx(a, "a")))
    b = provider(servers, world, 0, verify_imds=False)  # opt out: EC2 alone decides
    asyncio.run(b.init())
    asyncio.run(b.up(ctx(b, "b")))
