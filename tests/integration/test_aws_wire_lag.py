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
    ec2.assign_private_ip_addresses(NetworkInterfaceId=a, PrivateIpAddresses=[VIP],
                                    AllowReassignment=True)
    orders: set[str] = set()
    halves: set[tuple[bool, bool]] = set()
    duplicates = 0
    for s in (1, 3, 4, 7, 10):  # seeds whose draws give both orders
        moto.injector.lag = lag = WireLag(max_s=1.5, seed=s)
        new = b if s % 2 == 0 else a
        old = a if new == b else b
        ec2.create_tags(Resources=[new], Tags=[{"Key": "k", "Value": f"{s}:{new}"}])
        ec2.assign_private_ip_addresses(NetworkInterfaceId=new, PrivateIpAddresses=[VIP],
                                        AllowReassignment=True)
        seen: list[tuple[bool, bool]] = []
        while True:
            started = time.monotonic()
            moved = by_vip(ec2, world)
            tagged = claim(ec2, new) == f"{s}:{new}"
            seen.append((new in moved, tagged))
            # a stale read may list both holders (EC2 does), never nobody or a third ENI
            assert set(moved) <= {old, new} and moved
            duplicates += len(moved) == 2
            if started > lag.settled_at():
                break  # this sample was asked after every write became visible
            time.sleep(0.01)
        assert seen[-1] == (True, True) and moved == [new] and lag.stale_answers > 0
        tag_at = next(h.visible_at for h in lag.hidden if h.aspect == "tags")
        move_at = next(h.visible_at for h in lag.hidden if h.aspect == "addresses")
        orders.add("move first" if move_at < tag_at else "tag first")
        halves.update(x for x in seen if x[0] != x[1])
    # the schedule has both orders, and the reads showed both half-visible states
    assert orders == {"move first", "tag first"}
    assert halves == {(True, False), (False, True)}, halves
    assert duplicates > 0
