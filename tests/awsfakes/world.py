"""Seed an EC2 world in moto: one VPC, one subnet, N instances with known private IPs,
route tables and an Elastic IP; read helpers for assertions."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from typing import Any

from tests.awsfakes.imds import EniMeta, FakeImds, InstanceMeta

REGION = "eu-west-1"


@dataclass
class Node:
    instance_id: str
    eni_id: str
    private_ip: str
    mac: str  # the MAC the sidecar sees on its interface


@dataclass
class World:
    ec2: Any
    vpc_id: str
    vpc_cidr: str
    subnet_id: str
    subnet_cidr: str
    nodes: list[Node] = field(default_factory=list)
    route_tables: list[str] = field(default_factory=list)
    allocation_id: str = ""
    public_ip: str = ""
    vpc_ipv6_cidr: str = ""  # set when seeded with ipv6=True
    subnet_ipv6_cidr: str = ""

    # -- reads used by assertions ------------------------------------------------------
    def secondary_holders(self, vip: str) -> list[str]:
        enis = self.ec2.describe_network_interfaces(
            NetworkInterfaceIds=[n.eni_id for n in self.nodes])["NetworkInterfaces"]
        return sorted(e["NetworkInterfaceId"] for e in enis
                      if vip in {p["PrivateIpAddress"] for p in e["PrivateIpAddresses"]
                                 if not p.get("Primary")})

    def ipv6_holders(self, vip: str) -> list[str]:
        return sorted(n.eni_id for n in self.nodes if vip in self.ipv6s(n.eni_id))

    def ipv6s(self, eni_id: str) -> list[str]:
        """The ENI's IPv6 addresses in EC2 (compressed), as IMDS ipv6s shows them."""
        eni = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        return [str(ip_address(a["Ipv6Address"]))
                for a in eni["NetworkInterfaces"][0].get("Ipv6Addresses", [])]

    def eip_target(self) -> str | None:
        addr = self.ec2.describe_addresses(AllocationIds=[self.allocation_id])["Addresses"][0]
        return addr.get("NetworkInterfaceId") or None

    def route_targets(self, vip: str) -> dict[str, str | None]:
        out: dict[str, str | None] = {}
        for t in self.ec2.describe_route_tables(RouteTableIds=self.route_tables)["RouteTables"]:
            dest = ip_network(vip)  # a /32 or /128
            route = next((r for r in t["Routes"]
                          if ip_network(r.get("DestinationCidrBlock")
                                        or r.get("DestinationIpv6CidrBlock")) == dest), None)
            out[t["RouteTableId"]] = route.get("NetworkInterfaceId") if route else None
        return out

    def tags(self, resource: str) -> dict[str, str]:
        resp = self.ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])
        return {t["Key"]: t["Value"] for t in resp["Tags"]}

    def imds_instance(self, node: Node) -> InstanceMeta:
        return InstanceMeta(
            instance_id=node.instance_id, region=REGION, az=f"{REGION}a",
            macs={node.mac: EniMeta(node.eni_id, self.subnet_id, self.vpc_id,
                                    [node.private_ip], self.subnet_cidr, [self.vpc_cidr],
                                    subnet_ipv6_cidrs=[c for c in [self.subnet_ipv6_cidr] if c],
                                    vpc_ipv6_cidrs=[c for c in [self.vpc_ipv6_cidr] if c])},
        )

    def local_ipv4s(self, eni_id: str) -> list[str]:
        """What IMDS shows an instance: its ENI's addresses in EC2, primary first."""
        eni = self.ec2.describe_network_interfaces(NetworkInterfaceIds=[eni_id])
        ips = eni["NetworkInterfaces"][0]["PrivateIpAddresses"]
        return [p["PrivateIpAddress"] for p in sorted(ips, key=lambda p: not p.get("Primary"))]

    def publish(self, imds: FakeImds, client_ips: list[str]) -> None:
        for ip, node in zip(client_ips, self.nodes, strict=True):
            imds.instances[ip] = self.imds_instance(node)
        imds.local_ipv4s_from = self.local_ipv4s
        imds.ipv6s_from = self.ipv6s


def seed(ec2: Any, node_ips: list[str], macs: list[str], *, vpc_cidr: str,
         subnet_cidr: str, route_tables: int = 2, ipv6: bool = False) -> World:
    """ipv6: the VPC gets an Amazon-provided /56 and the subnet its first /64."""
    vpc = ec2.create_vpc(CidrBlock=vpc_cidr, AmazonProvidedIpv6CidrBlock=ipv6)["Vpc"]
    vpc_id = vpc["VpcId"]
    vpc6 = subnet6 = ""
    extra: dict[str, str] = {}
    if ipv6:
        # canonical text: moto writes some groups with leading zeros ("7713:0200::/56")
        vpc6 = str(ip_network(vpc["Ipv6CidrBlockAssociationSet"][0]["Ipv6CidrBlock"]))
        subnet6 = extra["Ipv6CidrBlock"] = str(next(ip_network(vpc6).subnets(new_prefix=64)))
    subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=subnet_cidr,
                                  AvailabilityZone=f"{REGION}a", **extra)["Subnet"]["SubnetId"]
    # moto accepts any AMI id; listing its catalogue would cost ~1.5 s per reset
    ami = "ami-0123456789abcdef0"
    world = World(ec2, vpc_id, vpc_cidr, subnet_id, subnet_cidr, vpc_ipv6_cidr=vpc6,
                  subnet_ipv6_cidr=subnet6)
    for ip, mac in zip(node_ips, macs, strict=True):
        inst = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, SubnetId=subnet_id,
                                 InstanceType="t3.micro", PrivateIpAddress=ip)["Instances"][0]
        eni = inst["NetworkInterfaces"][0]["NetworkInterfaceId"]
        # route mode refuses an ENI that checks source/destination (EC2 drops the traffic)
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni,
                                               SourceDestCheck={"Value": False})
        world.nodes.append(Node(inst["InstanceId"], eni, ip, mac))
    for _ in range(route_tables):
        world.route_tables.append(ec2.create_route_table(VpcId=vpc_id)["RouteTable"]["RouteTableId"])
    alloc = ec2.allocate_address(Domain="vpc")
    world.allocation_id, world.public_ip = alloc["AllocationId"], alloc["PublicIp"]
    return world
