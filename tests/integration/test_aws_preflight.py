"""`vip-sidecar check --provider aws` inside a namespace, against moto and the fake IMDS."""

import pytest

from tests.integration.harness import NETNS

pytestmark = [NETNS, pytest.mark.netns]


@pytest.fixture
def bed(make_aws_bed):
    return make_aws_bed(route_tables=1)


def lines(out: str) -> list[str]:
    return [line.strip() for line in out.splitlines()]


def test_check_eip_reports_identity_credentials_and_dry_run_permissions(bed):
    res = bed.check_cli(0, "eip")
    out = lines(res.stdout)
    print("\n" + res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ok   aws: region eu-west-1 (imds)" in out
    assert any(f"ENI {bed.eni(0)}" in line and line.startswith("ok") for line in out)
    assert "ok   aws: credentials: env" in out
    assert "ok   aws: permission ec2:AssociateAddress: allowed (DryRun)" in out
    assert "ok   aws: permission ec2:CreateTags: allowed (DryRun)" in out
    assert any("IMDSv2" in line and "hop limit sufficient" in line for line in out)
    # DryRun moved nothing
    assert bed.owner("eip") is None
    assert bed.moto.injector.calls("AssociateAddress", dry_run=False) == []


def test_check_names_a_denied_action(bed):
    bed.moto.injector.add("AssociateAddress", "unauthorized", count=None)
    res = bed.check_cli(0, "eip")
    print("\n" + res.stdout)
    assert res.returncode == 1
    assert ("FAIL aws: permission ec2:AssociateAddress: DENIED (UnauthorizedOperation) - add it "
            "to the policy") in lines(res.stdout)


def test_check_reports_the_imds_hop_limit_symptom(bed):
    bed.imds.hang_put = True  # the token answer never arrives, like hop limit 1 in a pod
    res = bed.check_cli(0, "secondary-ip", imds_timeout=0.5, imds_attempts=2)
    print("\n" + res.stdout)
    assert res.returncode == 1
    fail = [line for line in lines(res.stdout) if line.startswith("FAIL aws:")]
    assert len(fail) == 1 and "hop limit" in fail[0] and "token PUT" in fail[0]
    assert bed.imds.counters.hung_puts == 2 and bed.imds.counters.gets == 0


def test_check_route_never_moves_the_route_although_moto_ignores_dry_run(bed):
    rtb = bed.world.route_tables[0]
    vip = bed.vip("route")
    # no route yet: CreateRoute is not probed against a custom endpoint (it would create it)
    res = bed.check_cli(0, "route")
    print("\n" + res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert any("CreateRoute" in line and "not probed" in line for line in lines(res.stdout))
    assert any("tag budget: rtb-" in line for line in lines(res.stdout))
    assert bed.world.route_targets(vip) == {rtb: None}
    # the route points at node 1: node 0's probe replaces it with its current target only
    bed.world.ec2.create_route(RouteTableId=rtb, DestinationCidrBlock=f"{vip}/32",
                               NetworkInterfaceId=bed.eni(1))
    res = bed.check_cli(0, "route")
    print(res.stdout)
    assert res.returncode == 0
    assert "ok   aws: permission ec2:ReplaceRoute: allowed (endpoint ignored DryRun)" in lines(
        res.stdout)
    assert bed.world.route_targets(vip) == {rtb: bed.eni(1)}


def test_check_secondary_ip_says_what_it_cannot_probe(bed):
    res = bed.check_cli(0, "secondary-ip")
    print("\n" + res.stdout)
    assert res.returncode == 0
    out = lines(res.stdout)
    assert ("ok   aws: permission ec2:AssignPrivateIpAddresses not probed: no DryRun in this API"
            in out)
    assert "ok   aws: permission ec2:DescribeNetworkInterfaces: allowed (DryRun)" in out


def test_check_route_fails_while_source_dest_check_is_on(bed):
    bed.world.ec2.modify_network_interface_attribute(NetworkInterfaceId=bed.eni(0),
                                                     SourceDestCheck={"Value": True})
    res = bed.check_cli(0, "route")
    print("\n" + res.stdout + res.stderr)
    assert res.returncode != 0
    assert "source/destination check is on" in res.stdout + res.stderr
