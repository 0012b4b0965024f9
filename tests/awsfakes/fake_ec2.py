"""A hand-written EC2 client double with AWS semantics moto lacks (aws.md 4.6):
reassignment *moves* a secondary IP, describe calls can lag behind mutations, and
errors can be queued per operation. Plus a fake clock whose sleep only advances time.

Only the calls the aws provider makes are implemented, with boto3's parameter names.
"""

from __future__ import annotations

import asyncio
import copy
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from botocore.exceptions import ClientError


def client_error(code: str, status: int = 400, op: str = "Op", retries: int = 0) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": f"fake {code}"},
         "ResponseMetadata": {"HTTPStatusCode": status, "RetryAttempts": retries}},
        op,
    )


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


@dataclass
class Eni:
    eni_id: str
    subnet_id: str
    vpc_id: str
    primary: str
    mac: str
    instance_id: str
    secondaries: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    source_dest_check: bool = False  # route-mode tests turn it on where they need it
    ipv6s: list[str] = field(default_factory=list)  # IPv6 addresses, compressed


@dataclass
class Address:
    allocation_id: str
    public_ip: str
    eni_id: str | None = None
    private_ip: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Table:
    table_id: str
    vpc_id: str
    local: str
    routes: dict[str, str] = field(default_factory=dict)  # cidr -> eni id
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Pending:
    """A write not yet visible to describes: `aspect` of `resource` reads as `old`."""

    resource: str
    aspect: str  # secondaries | tags | assoc | routes
    old: Any
    visible_at: float


@dataclass
class LagModel:
    """Seeded read-after-write lag: each write (a move, a tag) becomes visible to
    describes at its own random time within max_s, so two writes show in either order."""

    clock: Callable[[], float]
    max_s: float
    seed: int = 0
    rng: random.Random = field(init=False)
    pending: list[Pending] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def record(self, resource: str, aspect: str, old: Any, delay: float | None = None) -> None:
        lag = self.rng.uniform(0, self.max_s) if delay is None else delay
        self.pending.append(Pending(resource, aspect, copy.deepcopy(old), self.clock() + lag))

    def old(self, resource: str, aspect: str) -> tuple[bool, Any]:
        """(True, state before the earliest write still invisible) or (False, None)."""
        now = self.clock()
        for w in self.pending:
            if w.resource == resource and w.aspect == aspect and w.visible_at > now:
                return True, w.old
        return False, None


@dataclass
class State:
    enis: dict[str, Eni] = field(default_factory=dict)
    addresses: dict[str, Address] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)


class FakeEc2:
    """semantics="aws": AllowReassignment moves the IP; "moto": it duplicates it;
    "stuck": assignments are accepted but never show (a broken data plane)."""

    def __init__(
        self, semantics: str = "aws", lag_reads: int = 0, lag: LagModel | None = None
    ) -> None:
        self.semantics = semantics
        self.lag_reads = lag_reads
        self.lag = lag
        self.tag_limit = 50
        self.state = State()
        self._stale: State | None = None
        self._stale_left = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.errors: dict[str, list[Exception]] = {}
        self.lock = threading.Lock()
        self.subnet_ipv6_cidr = "2001:db8:0:1::/64"  # every ENI's subnet (DescribeSubnets)

    # -- set-up ------------------------------------------------------------------------
    def add_eni(self, n: int, subnet: str = "subnet-0000000a", vpc: str = "vpc-0000000a",
                net: str = "10.0.0") -> Eni:
        eni = Eni(f"eni-{n:017x}", subnet, vpc, f"{net}.{n}", f"02:00:00:00:00:{n:02x}",
                  f"i-{n:017x}")
        self.state.enis[eni.eni_id] = eni
        return eni

    def add_address(self) -> Address:
        addr = Address("eipalloc-0000000000000000a", "198.51.100.7")
        self.state.addresses[addr.allocation_id] = addr
        return addr

    def add_table(self, n: int, vpc: str = "vpc-0000000a", local: str = "10.0.0.0/16") -> Table:
        table = Table(f"rtb-{n:017x}", vpc, local)
        self.state.tables[table.table_id] = table
        return table

    def fail(self, op: str, *errors: Exception) -> None:
        self.errors.setdefault(op, []).extend(errors)

    def count(self, op: str) -> int:
        return sum(1 for name, _ in self.calls if name == op)

    # -- plumbing ----------------------------------------------------------------------
    def _enter(self, op: str, params: dict[str, Any]) -> None:
        with self.lock:
            self.calls.append((op, params))
            queued = self.errors.get(op)
            error = queued.pop(0) if queued else None
        if error is not None:
            raise error
        if params.get("DryRun"):
            raise client_error("DryRunOperation", 412, op)

    def _mutate(self) -> None:
        if self.lag_reads:
            self._stale = copy.deepcopy(self.state)
            self._stale_left = self.lag_reads

    def _touch(self, obj: Any, resource: str, aspect: str) -> None:
        """Called before a write changes `aspect` of `obj` (for the lag model)."""
        if self.lag is None:
            return
        old = (obj.eni_id, obj.private_ip) if aspect == "assoc" else getattr(obj, aspect)
        self.lag.record(resource, aspect, old)

    def _view(self) -> State:
        if self._stale is not None and self._stale_left > 0:
            self._stale_left -= 1
            return self._stale
        if self.lag is None:
            return self.state
        view = copy.deepcopy(self.state)
        objs: list[tuple[str, Any, tuple[str, ...]]] = (
            [(k, v, ("secondaries", "ipv6s", "tags")) for k, v in view.enis.items()]
            + [(k, v, ("assoc", "tags")) for k, v in view.addresses.items()]
            + [(k, v, ("routes", "tags")) for k, v in view.tables.items()])
        for res, obj, aspects in objs:
            for aspect in aspects:
                stale, old = self.lag.old(res, aspect)
                if not stale:
                    continue
                if aspect == "assoc":
                    obj.eni_id, obj.private_ip = old
                else:
                    setattr(obj, aspect, copy.deepcopy(old))
        return view

    @staticmethod
    def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _meta(self) -> dict[str, Any]:
        return {"ResponseMetadata": {"HTTPStatusCode": 200, "RetryAttempts": 0}}

    # -- ENIs ----------------------------------------------------------------------------
    def describe_network_interfaces(self, **params: Any) -> dict[str, Any]:
        self._enter("DescribeNetworkInterfaces", params)
        view = self._view()
        enis = list(view.enis.values())
        if params.get("NetworkInterfaceIds"):
            wanted = params["NetworkInterfaceIds"]
            missing = [e for e in wanted if e not in view.enis]
            if missing:
                raise client_error("InvalidNetworkInterfaceID.NotFound")
            enis = [view.enis[e] for e in wanted]
        for flt in params.get("Filters", []):
            values = set(flt["Values"])
            if flt["Name"] == "addresses.private-ip-address":
                # EC2 matches primary and secondary addresses (aws.md "Eventual consistency")
                enis = [e for e in enis if values & {e.primary, *e.secondaries}]
                continue
            if flt["Name"] == "ipv6-addresses.ipv6-address":
                enis = [e for e in enis if values & set(e.ipv6s)]
                continue
            if flt["Name"] == "tag-key":
                enis = [e for e in enis if values & set(e.tags)]
                continue
            key = {"subnet-id": "subnet_id", "mac-address": "mac"}[flt["Name"]]
            enis = [e for e in enis if getattr(e, key) in values]
        out = []
        for e in enis:
            ips = [{"PrivateIpAddress": e.primary, "Primary": True}] + [
                {"PrivateIpAddress": ip, "Primary": False} for ip in e.secondaries]
            out.append({
                "NetworkInterfaceId": e.eni_id, "SubnetId": e.subnet_id, "VpcId": e.vpc_id,
                "PrivateIpAddress": e.primary, "PrivateIpAddresses": ips,
                "MacAddress": e.mac, "Attachment": {"InstanceId": e.instance_id},
                "SourceDestCheck": e.source_dest_check, "TagSet": self._tags(e.tags),
                "Ipv6Addresses": [{"Ipv6Address": ip} for ip in e.ipv6s],
            })
        return {"NetworkInterfaces": copy.deepcopy(out), **self._meta()}

    def assign_private_ip_addresses(self, **params: Any) -> dict[str, Any]:
        self._enter("AssignPrivateIpAddresses", params)
        target = self.state.enis[params["NetworkInterfaceId"]]
        if self.semantics == "stuck":
            return self._meta()
        self._mutate()
        for ip in params["PrivateIpAddresses"]:
            holders = [e for e in self.state.enis.values() if ip in e.secondaries]
            if holders and holders != [target] and not params.get("AllowReassignment"):
                raise client_error("InvalidParameterValue")
            if self.semantics == "aws":
                for other in holders:
                    if other is not target:
                        self._touch(other, other.eni_id, "secondaries")
                        other.secondaries.remove(ip)
            if ip not in target.secondaries:
                self._touch(target, target.eni_id, "secondaries")
                target.secondaries.append(ip)
        return self._meta()

    def unassign_private_ip_addresses(self, **params: Any) -> dict[str, Any]:
        self._enter("UnassignPrivateIpAddresses", params)
        eni = self.state.enis[params["NetworkInterfaceId"]]
        for ip in params["PrivateIpAddresses"]:
            if ip not in eni.secondaries:
                # AWS rejects unassigning an address the ENI does not have
                raise client_error("InvalidParameterValue")
        self._mutate()
        self._touch(eni, eni.eni_id, "secondaries")
        for ip in params["PrivateIpAddresses"]:
            eni.secondaries.remove(ip)
        return self._meta()

    def describe_subnets(self, **params: Any) -> dict[str, Any]:
        self._enter("DescribeSubnets", params)
        assoc = {"Ipv6CidrBlock": self.subnet_ipv6_cidr,
                 "Ipv6CidrBlockState": {"State": "associated"}}
        return {"Subnets": [{"SubnetId": s, "Ipv6CidrBlockAssociationSet": [assoc]}
                            for s in params["SubnetIds"]], **self._meta()}

    def assign_ipv6_addresses(self, **params: Any) -> dict[str, Any]:
        """EC2: no AllowReassignment; an address another ENI holds is refused."""
        self._enter("AssignIpv6Addresses", params)
        target = self.state.enis[params["NetworkInterfaceId"]]
        for ip in params["Ipv6Addresses"]:
            if any(ip in e.ipv6s for e in self.state.enis.values()):
                raise client_error("InvalidIPAddress.InUse")  # ours too: already assigned
        self._mutate()
        self._touch(target, target.eni_id, "ipv6s")
        target.ipv6s.extend(params["Ipv6Addresses"])
        return self._meta()

    def unassign_ipv6_addresses(self, **params: Any) -> dict[str, Any]:
        self._enter("UnassignIpv6Addresses", params)
        eni = self.state.enis[params["NetworkInterfaceId"]]
        if any(ip not in eni.ipv6s for ip in params["Ipv6Addresses"]):
            raise client_error("InvalidParameterValue")
        self._mutate()
        self._touch(eni, eni.eni_id, "ipv6s")
        for ip in params["Ipv6Addresses"]:
            eni.ipv6s.remove(ip)
        return self._meta()

    def ipv6_holders(self, ip: str) -> list[str]:
        return sorted(e.eni_id for e in self.state.enis.values() if ip in e.ipv6s)

    def create_tags(self, **params: Any) -> dict[str, Any]:
        self._enter("CreateTags", params)
        self._mutate()
        for res in params["Resources"]:
            obj: Any = (self.state.enis.get(res) or self.state.addresses.get(res)
                        or self.state.tables.get(res))
            if obj is None:
                raise client_error("InvalidID")
            if len(set(obj.tags) | {t["Key"] for t in params["Tags"]}) > self.tag_limit:
                raise client_error("TagLimitExceeded")
            if any(len(t["Value"]) > 256 for t in params["Tags"]):
                raise client_error("InvalidParameterValue")
            self._touch(obj, res, "tags")
            for tag in params["Tags"]:
                obj.tags[tag["Key"]] = tag["Value"]
        return self._meta()

    def delete_tags(self, **params: Any) -> dict[str, Any]:
        self._enter("DeleteTags", params)
        self._mutate()
        for res in params["Resources"]:
            obj: Any = (self.state.enis.get(res) or self.state.addresses.get(res)
                        or self.state.tables.get(res))
            if obj is None:
                raise client_error("InvalidID")
            self._touch(obj, res, "tags")
            for tag in params["Tags"]:
                obj.tags.pop(tag["Key"], None)
        return self._meta()

    # -- EIPs ----------------------------------------------------------------------------
    def describe_addresses(self, **params: Any) -> dict[str, Any]:
        self._enter("DescribeAddresses", params)
        view = self._view()
        out = []
        for a in view.addresses.values():
            if params.get("AllocationIds") and a.allocation_id not in params["AllocationIds"]:
                continue
            if params.get("PublicIps") and a.public_ip not in params["PublicIps"]:
                continue
            item: dict[str, Any] = {"AllocationId": a.allocation_id, "PublicIp": a.public_ip,
                                    "Domain": "vpc", "Tags": self._tags(a.tags)}
            if a.eni_id:
                item.update(NetworkInterfaceId=a.eni_id, PrivateIpAddress=a.private_ip)
            out.append(item)
        if params.get("AllocationIds") and not out:
            raise client_error("InvalidAllocationID.NotFound")
        return {"Addresses": copy.deepcopy(out), **self._meta()}

    def associate_address(self, **params: Any) -> dict[str, Any]:
        self._enter("AssociateAddress", params)
        addr = self.state.addresses[params["AllocationId"]]
        if addr.eni_id and addr.eni_id != params["NetworkInterfaceId"] and not params.get(
                "AllowReassociation"):
            raise client_error("Resource.AlreadyAssociated")
        self._mutate()
        self._touch(addr, addr.allocation_id, "assoc")
        addr.eni_id = params["NetworkInterfaceId"]
        addr.private_ip = params.get("PrivateIpAddress") or self.state.enis[addr.eni_id].primary
        return {"AssociationId": "eipassoc-1", **self._meta()}

    # -- routes --------------------------------------------------------------------------
    def describe_route_tables(self, **params: Any) -> dict[str, Any]:
        self._enter("DescribeRouteTables", params)
        view = self._view()
        out = []
        for table_id in params.get("RouteTableIds", list(view.tables)):
            if table_id not in view.tables:
                raise client_error("InvalidRouteTableID.NotFound")
            t = view.tables[table_id]
            routes: list[dict[str, Any]] = [
                {"DestinationCidrBlock": t.local, "GatewayId": "local", "State": "active"}]
            for cidr, eni in t.routes.items():
                state = "active" if eni in view.enis else "blackhole"
                routes.append({"DestinationCidrBlock": cidr, "NetworkInterfaceId": eni,
                               "InstanceId": "i-x", "State": state})
            out.append({"RouteTableId": t.table_id, "VpcId": t.vpc_id, "Routes": routes,
                        "Tags": self._tags(t.tags)})
        return {"RouteTables": copy.deepcopy(out), **self._meta()}

    def _route(self, op: str, params: dict[str, Any], must_exist: bool) -> dict[str, Any]:
        self._enter(op, params)
        table = self.state.tables[params["RouteTableId"]]
        cidr = params["DestinationCidrBlock"]
        if IPv4Network(cidr).subnet_of(IPv4Network(table.local)):
            raise client_error("InvalidParameterValue")
        if must_exist and cidr not in table.routes:
            raise client_error("InvalidParameterValue")
        if not must_exist and cidr in table.routes:
            raise client_error("RouteAlreadyExists")
        self._mutate()
        self._touch(table, table.table_id, "routes")
        table.routes[cidr] = params["NetworkInterfaceId"]
        return self._meta()

    def create_route(self, **params: Any) -> dict[str, Any]:
        return self._route("CreateRoute", params, must_exist=False)

    def replace_route(self, **params: Any) -> dict[str, Any]:
        return self._route("ReplaceRoute", params, must_exist=True)

    # -- views for assertions ------------------------------------------------------------
    def holders(self, ip: str) -> list[str]:
        return sorted(e.eni_id for e in self.state.enis.values() if ip in e.secondaries)


def in_subnet(ip: str, cidr: str) -> bool:
    return IPv4Address(ip) in IPv4Network(cidr)
