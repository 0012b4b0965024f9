"""The EC2 test bed itself (issue 17): moto behind the wrapper with EC2's semantics
(reassignment moves, address filter on secondaries) and seeded read-after-write lag.
In-process on loopback: no namespaces needed."""

from __future__ import annotations

import time

import pytest

from tests.awsfakes.moto_server import FaultyMoto, WireLag
from tests.awsfakes.world import seed

VIP = "10.78.0.100"


@pytest.fixture(scope="module")
def moto():
    server = FaultyMoto("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def world(moto):
    moto.reset()
    moto.injector.aws_semantics = True
    moto.injector.lag = None
    yield seed(moto.client(), ["10.78.0.1", "10.78.0.2"],
               ["02:00:00:78:00:01", "02:00:00:78:00:02"],
               vpc_cidr="10.78.0.0/16", subnet_cidr="10.78.0.0/24")
    moto.injector.aws_semantics = False
    moto.injector.lag = None


def by_vip(ec2, world) -> list[str]:
    resp = ec2.describe_network_interfaces(Filters=[
        {"Name": "subnet-id", "Values": [world.subnet_id]},
        {"Name": "addresses.private-ip-address", "Values": [VIP]}])
    return sorted(e["NetworkInterfaceId"] for e in resp["NetworkInterfaces"])


def claim(ec2, eni: str) -> str | None:
    resp = ec2.describe_network_interfaces(Filters=[{"Name": "tag-key", "Values": ["k"]}],
                                           NetworkInterfaceIds=[eni])
    found = resp["NetworkInterfaces"]
    return None if not found else {t["Key"]: t["Value"] for t in found[0]["TagSet"]}.get("k")


def test_reassignment_moves_and_the_address_filter_sees_secondaries(moto, world):
    a, b = (n.eni_id for n in world.nodes)
    ec2 = world.ec2
    for eni in (a, b):
        ec2.assign_private_ip_addresses(NetworkInterfaceId=eni, PrivateIpAddresses=[VIP],
                                        AllowReassignment=True)
    assert world.secondary_holders(VIP) == [b] == by_vip(ec2, world)
    ec2.create_tags(Resources=[b], Tags=[{"Key": "k", "Value": "1:b"}])
    assert claim(ec2, b) == "1:b" and claim(ec2, a) is None


def test_lag_answers_the_old_state_then_the_new_one_in_either_order(moto, world):
    a, b = (n.eni_id for n in world.nodes)
    ec2 = world.ec2
    ec2.assign_private_ip_addresses(NetworkInterfaceId=b, PrivateIpAddresses=[VIP],
                                    AllowReassignment=True)
    orders: set[str] = set()
    duplicates = 0
    for n, s in enumerate((1, 3, 4, 7, 10)):  # seeds whose draws give both orders
        moto.injector.lag = lag = WireLag(max_s=1.5, seed=s)
        new = a if n % 2 == 0 else b  # the address moves back and forth
        old = a if new == b else b
        ec2.create_tags(Resources=[new], Tags=[{"Key": "k", "Value": f"{s}:{new}"}])
        ec2.assign_private_ip_addresses(NetworkInterfaceId=new, PrivateIpAddresses=[VIP],
                                        AllowReassignment=True)
        tag_at = next(h.visible_at for h in lag.hidden if h.aspect == "tags")
        move_at = next(h.visible_at for h in lag.hidden if h.aspect == "addresses")
        orders.add("move first" if move_at < tag_at else "tag first")
        while True:
            t0 = time.monotonic()
            moved = by_vip(ec2, world)
            t1 = time.monotonic()
            tagged = claim(ec2, new) == f"{s}:{new}"
            t2 = time.monotonic()
            # each read agrees with the schedule wherever it was clearly before or after
            if t1 < move_at or t0 > move_at:
                assert (new in moved) == (t0 > move_at), (s, t0, t1, move_at)
            if t2 < tag_at or t1 > tag_at:
                assert tagged == (t1 > tag_at), (s, t1, t2, tag_at)
            # a stale read may list both holders (EC2 does), never nobody or a third ENI
            assert set(moved) <= {old, new} and moved
            duplicates += len(moved) == 2
            if t0 > lag.settled_at():
                break  # this sample was asked after every write became visible
            time.sleep(0.01)
        assert new in moved and tagged and moved == [new] and lag.stale_answers > 0
    # the schedule has both orders (a move and its tag become visible either way)
    assert orders == {"move first", "tag first"}
    assert duplicates > 0
