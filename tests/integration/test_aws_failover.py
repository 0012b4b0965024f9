"""AWS provider, two real sidecar daemons in namespaces, real CARP election, EC2 = moto's
HTTP server, identity from a token-checking fake IMDS (issue 4, must-show 1, 2, 4).

Each test reads EC2 back through its own boto3 client after every failover."""

import signal
import time

import pytest

from tests.awsfakes.bed import events, wait_owner
from tests.integration.harness import NETNS, wait_for

pytestmark = [NETNS, pytest.mark.netns]


@pytest.fixture
def bed(make_aws_bed):
    return make_aws_bed()


@pytest.mark.parametrize("mode", ["secondary-ip", "eip", "route"])
def test_vip_follows_the_master_through_kill9_and_sigterm(bed, mode):
    a = bed.start(0, mode, advskew=0, name="a")
    wait_for(lambda: a.state() == "MASTER", 8, what="a MASTER")
    wait_owner(bed, mode, bed.eni(0), 10)
    b = bed.start(1, mode, advskew=50, name="b")
    wait_for(lambda: b.state() == "BACKUP" and events(b, "aws_ready"), 8, what="b ready")
    time.sleep(1.5)
    assert b.state() == "BACKUP"
    assert bed.owner(mode) == bed.eni(0)
    assert bed.epoch(mode, 0) == (1, f"node0/{bed.eni(0)}")

    # identity came from IMDSv2 (no ids in the config, no region in the environment)
    ready = events(a, "aws_ready")[0]
    assert ready["region"] == "eu-west-1" and ready["sources"]["region"] == "imds"
    assert ready["eni_id"] == bed.eni(0) and ready["sources"]["eni_id"] == "imds"
    assert ready["instance_id"] == bed.world.nodes[0].instance_id
    assert bed.imds.counters.puts >= 2 and bed.imds.counters.unauthorized == 0

    # 1) kill -9 of the master: b is elected and moves the VIP
    t0 = time.time()
    a.signal(signal.SIGKILL)
    elected = wait_for(lambda: b.became("MASTER", after=t0), 8, what="b MASTER") - t0
    moved = wait_owner(bed, mode, bed.eni(1), 10) - t0
    claimed = wait_for(lambda: events(b, "aws_claimed"), 5, what="b's claim logged")[-1]
    print(f"\n[{mode}] kill -9: b MASTER after {elected:.2f}s, EC2 points at b after "
          f"{moved:.2f}s (provider: api {claimed['api_s']}s, effective "
          f"{claimed['effective_s']}s, {claimed['actions']} actions, {claimed['reads']} reads)")
    assert claimed["epoch"] == 2 and bed.epoch(mode, 1) == (2, f"node1/{bed.eni(1)}")
    aws_status = b.vip()["providers"]["aws"]["details"]
    assert (aws_status["mode"], aws_status["epoch"], aws_status["eni_id"]) == (
        mode, 2, bed.eni(1))
    assert aws_status["calls"] >= 2 and aws_status["errors"] == 0
    if mode == "secondary-ip":
        # moto left the VIP on a's ENI too (no AllowReassignment); b removed that copy
        assert bed.world.secondary_holders(bed.vip(mode)) == [bed.eni(1)]
        unassigns = bed.moto.injector.calls("UnassignPrivateIpAddresses", bed.hosts[1].ip)
        assert [u.params["NetworkInterfaceId"] for u in unassigns] == [bed.eni(0)]
        assert events(b, "aws_duplicate_removed")

    # 2) a comes back (no preempt): stays BACKUP, EC2 untouched
    a2 = bed.start(0, mode, advskew=0, name="a2")
    wait_for(lambda: events(a2, "aws_ready"), 8, what="a2 ready")
    time.sleep(2)
    assert a2.state() == "BACKUP" and bed.owner(mode) == bed.eni(1)

    # 3) SIGTERM of the master: bow-out, a2 takes over at once, EC2 follows
    t1 = time.time()
    b.signal(signal.SIGTERM)
    elected = wait_for(lambda: a2.became("MASTER", after=t1), 4, what="a2 MASTER") - t1
    moved = wait_owner(bed, mode, bed.eni(0), 10) - t1
    print(f"[{mode}] SIGTERM: a2 MASTER after {elected:.2f}s, EC2 points at a after "
          f"{moved:.2f}s")
    assert b.wait(10) == 0
    # b's down changed nothing in EC2 (no unassign/disassociate/delete from b on exit)
    for action in ("UnassignPrivateIpAddresses", "DisassociateAddress", "DeleteRoute"):
        late = [r for r in bed.moto.injector.calls(action, bed.hosts[1].ip) if r.at >= t1]
        assert late == []
    assert events(b, "aws_release")
    wait_for(lambda: events(a2, "aws_claimed"), 5, what="a2's claim logged")
    assert bed.epoch(mode, 0) == (3, f"node0/{bed.eni(0)}")
    if mode == "secondary-ip":
        assert bed.world.secondary_holders(bed.vip(mode)) == [bed.eni(0)]
    time.sleep(2.5)  # a2's periodic check finds nothing to repair
    assert bed.owner(mode) == bed.eni(0) and not events(a2, "aws_drift")


@pytest.mark.parametrize("mode", ["eip", "route"])
def test_master_repairs_drift_and_yields_to_a_newer_fencing_epoch(bed, mode):
    a = bed.start(0, mode, advskew=0, name="a")
    wait_owner(bed, mode, bed.eni(0), 12)
    b = bed.start(1, mode, advskew=50, name="b")
    wait_for(lambda: events(b, "aws_ready"), 8, what="b ready")
    ec2 = bed.world.ec2
    # someone points the VIP elsewhere without a fencing claim: a re-asserts
    if mode == "eip":
        ec2.associate_address(AllocationId=bed.world.allocation_id,
                              NetworkInterfaceId=bed.eni(1), AllowReassociation=True)
    else:
        ec2.replace_route(RouteTableId=bed.world.route_tables[1],
                          DestinationCidrBlock=f"{bed.vip(mode)}/32", NetworkInterfaceId=bed.eni(1))
    assert bed.owner(mode) != bed.eni(0)
    t0 = time.time()
    repaired = wait_owner(bed, mode, bed.eni(0), 6) - t0
    print(f"\n[{mode}] drift repaired after {repaired:.2f}s (reassert_interval 2s)")
    wait_for(lambda: a.vip()["counters"]["repairs"] == {"aws": 1}, 5, what="repair counted")
    assert events(a, "aws_drift") and a.state() == "MASTER"
    assert bed.epoch(mode, 0)[0] == 2  # the repair is a new claim

    # a newer claim (higher epoch by another holder) fences a off: it steps down
    for res in bed.fence_resource(mode, 0):
        ec2.create_tags(Resources=[res], Tags=[
            {"Key": f"vip-sidecar/{bed.vip(mode)}", "Value": "10:intruder"}])
    t1 = time.time()
    wait_for(lambda: b.became("MASTER", after=t1), 10, what="b MASTER after a is fenced")
    wait_owner(bed, mode, bed.eni(1), 10)
    assert any("fencing epoch 10" in e["message"] for e in a.events()
               if e.get("event") == "demote")
    assert bed.epoch(mode, 1) == (11, f"node1/{bed.eni(1)}")


@pytest.mark.parametrize("mode", ["secondary-ip", "route"])
def test_ipv6_vip_follows_the_master_through_kill9_and_sigterm(make_aws_bed, mode):
    """Issue 12: two daemons electing over IPv6 (srcip = each host's IPv6 address, adverts
    to ff02::12) move an IPv6 VIP in EC2; secondary-ip with EC2's semantics in the wrapper
    (an address held elsewhere is refused), so the old holder must be unassigned first."""
    bed = make_aws_bed(ipv6=True)
    bed.moto.injector.aws_semantics = True
    a = bed.start(0, mode, advskew=0, name="a", emulator_compat=False)
    wait_for(lambda: a.state() == "MASTER", 8, what="a MASTER")
    wait_owner(bed, mode, bed.eni(0), 10)
    b = bed.start(1, mode, advskew=50, name="b", emulator_compat=False)
    wait_for(lambda: b.state() == "BACKUP" and events(b, "aws_ready"), 8, what="b ready")
    assert a.vip()["family"] == "ipv6"

    t0 = time.time()
    a.signal(signal.SIGKILL)
    elected = wait_for(lambda: b.became("MASTER", after=t0), 8, what="b MASTER") - t0
    moved = wait_owner(bed, mode, bed.eni(1), 10) - t0
    claimed = wait_for(lambda: events(b, "aws_claimed"), 5, what="b's claim logged")[-1]
    print(f"\n[{mode} IPv6] kill -9: b MASTER after {elected:.2f}s, EC2 points at b after "
          f"{moved:.2f}s (effective {claimed['effective_s']}s, {claimed['actions']} actions)")
    assert bed.epoch(mode, 1) == (2, f"node1/{bed.eni(1)}")
    if mode == "secondary-ip":
        assert bed.vip(mode) not in bed.world.ipv6s(bed.eni(0))
        unassigns = bed.moto.injector.calls("UnassignIpv6Addresses", bed.hosts[1].ip)
        assert [u.params["NetworkInterfaceId"] for u in unassigns] == [bed.eni(0)]

    a2 = bed.start(0, mode, advskew=0, name="a2", emulator_compat=False)
    wait_for(lambda: a2.state() == "BACKUP" and events(a2, "aws_ready"), 8, what="a2 ready")
    t1 = time.time()
    b.signal(signal.SIGTERM)
    wait_for(lambda: a2.became("MASTER", after=t1), 4, what="a2 MASTER")
    moved = wait_owner(bed, mode, bed.eni(0), 10) - t1
    print(f"[{mode} IPv6] SIGTERM: EC2 points at a after {moved:.2f}s")
    assert b.wait(10) == 0
    assert bed.epoch(mode, 0) == (3, f"node0/{bed.eni(0)}")
