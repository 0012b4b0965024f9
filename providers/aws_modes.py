"""The three ways to point a VIP at this node, each as read -> plan -> act.

Each mode reads the current EC2 state, compares it with "the VIP points at our ENI and
carries our fencing tags", and names the next step. The provider runs these through
`converge` (providers/aws_retry.py), which re-reads until EC2 shows the result.

Fencing: a per-VIP epoch and holder are stored as tags on the moved resource (the ENI
that holds the secondary IP, the EIP allocation, each route table). A takeover claims
max(epoch seen) + 1; a node that later sees a higher epoch written by someone else has
lost the VIP to a newer claim and must not re-take it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from providers.aws_api import Ec2Api
from providers.aws_errors import AwsConfigError, AwsError, ErrorKind, classify
from providers.aws_retry import Plan
from sidecar.log import event

EKS_NO_MANAGE_TAG = "node.k8s.amazonaws.com/no_manage"


@dataclass
class Identity:
    region: str
    eni_id: str
    instance_id: str | None = None
    mac: str | None = None
    subnet_id: str | None = None
    vpc_id: str | None = None
    private_ip: IPv4Address | None = None  # the ENI's primary private IP
    subnet_cidr: IPv4Network | None = None
    vpc_cidrs: tuple[IPv4Network, ...] = ()
    source_dest_check: bool | None = None
    eni_tags: dict[str, str] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # field -> option|imds|describe


@dataclass(frozen=True)
class Fence:
    """The tag keys of one VIP and this node's claim."""

    prefix: str
    vip: IPv4Address
    holder: str  # node name / ENI: unique even when two nodes share a hostname
    enabled: bool = True

    @property
    def epoch_key(self) -> str:
        return f"{self.prefix}{self.vip}/epoch"

    @property
    def holder_key(self) -> str:
        return f"{self.prefix}{self.vip}/holder"

    def read(self, tags: list[dict[str, str]] | None) -> tuple[int, str | None]:
        """(epoch, holder) from an EC2 tag list; epoch 0 when absent or unreadable."""
        values = {t.get("Key"): t.get("Value") for t in tags or []}
        raw = values.get(self.epoch_key)
        try:
            epoch = int(raw) if raw is not None else 0
        except ValueError:
            epoch = 0
        return epoch, values.get(self.holder_key)

    def tags(self, epoch: int) -> list[dict[str, str]]:
        return [
            {"Key": self.epoch_key, "Value": str(epoch)},
            {"Key": self.holder_key, "Value": self.holder},
        ]


@dataclass
class ModePlan(Plan):
    points_here: bool = False
    seen_epoch: int = 0  # highest epoch tag for this VIP anywhere we looked
    seen_holder: str | None = None  # who wrote it
    fence_lost: bool = False  # someone else holds a higher epoch than our claim
    owners: list[str] = field(default_factory=list)  # where EC2 says the VIP points
    todo: list[str] = field(default_factory=list)  # resource ids the step acts on
    present: list[str] = field(default_factory=list)  # route: tables that have the route


def _tag_dict(tags: list[dict[str, str]] | None) -> dict[str, str]:
    return {str(t.get("Key")): str(t.get("Value")) for t in tags or []}


class Mode:
    """Base: the resource kind, how to read it, how to act on it."""

    name = ""
    resource_kind = ""

    def __init__(self, api: Ec2Api, ident: Identity, vip: IPv4Address, fence: Fence) -> None:
        self.api = api
        self.ident = ident
        self.vip = vip
        self.fence = fence

    async def validate(self, deadline: float) -> list[str]:
        """Init-time checks; raise AwsConfigError, return warnings."""
        return []

    async def observe(self, deadline: float) -> Any:
        """Read the EC2 state of the moved resource(s)."""
        raise NotImplementedError

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        """Pure: what `obs` means for a claim with fencing `epoch` (None: not claimed)."""
        raise NotImplementedError

    async def read(self, deadline: float, epoch: int | None) -> ModePlan:
        return self.plan(await self.observe(deadline), epoch)

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        raise NotImplementedError

    def _fence_verdict(self, plan: ModePlan, epoch: int | None) -> None:
        if epoch is not None and self.fence.enabled and plan.seen_epoch > epoch:
            plan.fence_lost = plan.seen_holder != self.fence.holder

    async def tag(self, resources: list[str], deadline: float, epoch: int) -> None:
        await self.api.call(
            "CreateTags",
            deadline,
            "write fencing epoch",
            Resources=resources,
            Tags=self.fence.tags(epoch),
        )

    async def tag_if_fencing(self, resources: list[str], deadline: float, epoch: int) -> None:
        # written together with the move: one read-back then confirms both
        if self.fence.enabled:
            await self.tag(resources, deadline, epoch)

    def describe_target(self) -> str:
        return self.ident.eni_id


# ----------------------------------------------------------------------------- secondary-ip
@dataclass
class SubnetView:
    enis: list[dict[str, Any]]
    local_ipv4s: list[str] | None  # IMDS view of our ENI; None when not checked


class SecondaryIpMode(Mode):
    name = "secondary-ip"
    resource_kind = "network-interface"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPv4Address,
        fence: Fence,
        local_ipv4s: Callable[[], list[str] | None] | None = None,
    ) -> None:
        super().__init__(api, ident, vip, fence)
        # the instance's own view (IMDS local-ipv4s) is AWS's documented confirmation
        # that a remap reached this instance; describe calls can be ahead of it
        self.local_ipv4s = local_ipv4s

    async def validate(self, deadline: float) -> list[str]:
        warnings: list[str] = []
        if self.ident.subnet_cidr is not None and self.vip not in self.ident.subnet_cidr:
            raise AwsConfigError(
                f"secondary-ip: VIP {self.vip} is outside subnet {self.ident.subnet_id} "
                f"({self.ident.subnet_cidr}) of {self.ident.eni_id}; a secondary IP must "
                "belong to the ENI's subnet (use mode route or eip across subnets/AZs)"
            )
        if self.ident.private_ip == self.vip:
            raise AwsConfigError(
                f"secondary-ip: VIP {self.vip} is the primary IP of {self.ident.eni_id}"
            )
        if self.ident.subnet_id is None:
            raise AwsConfigError("secondary-ip: the ENI's subnet is unknown")
        return warnings

    async def _subnet_enis(self, deadline: float) -> list[dict[str, Any]]:
        # moto (and some AWS docs readings) match addresses.private-ip-address on the
        # primary IP only; a filtered, paginated subnet listing finds secondaries everywhere
        enis: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {
                "Filters": [{"Name": "subnet-id", "Values": [self.ident.subnet_id]}],
                "MaxResults": 1000,
            }
            if token:
                params["NextToken"] = token
            resp = await self.api.call(
                "DescribeNetworkInterfaces", deadline, "find who holds the VIP", **params
            )
            enis.extend(resp.get("NetworkInterfaces", []))
            token = resp.get("NextToken")
            if not token:
                return enis

    async def observe(self, deadline: float) -> SubnetView:
        enis = await self._subnet_enis(deadline)
        local = None
        if self.local_ipv4s is not None:
            local = await asyncio.to_thread(self.local_ipv4s)
        return SubnetView(enis, local)

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        vip = str(self.vip)
        view: SubnetView = obs
        enis = view.enis
        plan = ModePlan()
        own: dict[str, Any] | None = None
        for eni in enis:
            ips = {p.get("PrivateIpAddress") for p in eni.get("PrivateIpAddresses", [])}
            if eni.get("NetworkInterfaceId") == self.ident.eni_id:
                own = eni
            if vip in ips:
                plan.owners.append(str(eni.get("NetworkInterfaceId")))
            e, holder = self.fence.read(eni.get("TagSet"))
            if e > plan.seen_epoch:
                plan.seen_epoch, plan.seen_holder = e, holder
        if own is None:
            raise AwsConfigError(
                f"secondary-ip: own ENI {self.ident.eni_id} is not in subnet "
                f"{self.ident.subnet_id} any more"
            )
        self._fence_verdict(plan, epoch)
        others = [o for o in plan.owners if o != self.ident.eni_id]
        plan.points_here = self.ident.eni_id in plan.owners and not others
        own_tags = self.fence.read(own.get("TagSet"))
        tags_ok = not self.fence.enabled or (
            epoch is not None and own_tags == (epoch, self.fence.holder)
        )
        if self.ident.eni_id not in plan.owners:
            plan.step, plan.todo = "assign", [self.ident.eni_id]
        elif others:
            # only once our ENI lists it: on AWS the reassignment has then taken effect
            # and any other listing is a stale duplicate (moto never clears it)
            plan.step, plan.todo = "unassign:" + ",".join(sorted(others)), sorted(others)
        elif not tags_ok:
            plan.step, plan.todo = "tag", [self.ident.eni_id]
        elif view.local_ipv4s is not None and vip not in view.local_ipv4s:
            plan.step = None  # EC2 agrees; wait (no action) until the instance sees it too
        else:
            plan.ok = True
        plan.summary = f"VIP {vip} on {plan.owners or 'no ENI'}; fence {own_tags}"
        if view.local_ipv4s is not None:
            plan.summary += f"; IMDS local-ipv4s {'has' if vip in view.local_ipv4s else 'lacks'} it"
        return plan

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        vip = str(self.vip)
        if plan.step == "assign":
            await self.api.call(
                "AssignPrivateIpAddresses",
                deadline,
                f"move {vip} to {self.ident.eni_id}",
                NetworkInterfaceId=self.ident.eni_id,
                PrivateIpAddresses=[vip],
                AllowReassignment=True,
            )
            await self.tag_if_fencing([self.ident.eni_id], deadline, epoch)
        elif plan.step and plan.step.startswith("unassign:"):
            for other in plan.todo:
                await self._unassign_duplicate(other, deadline)
        elif plan.step == "tag":
            await self.tag([self.ident.eni_id], deadline, epoch)

    async def _unassign_duplicate(self, other: str, deadline: float) -> None:
        vip = str(self.vip)
        try:
            await self.api.call(
                "UnassignPrivateIpAddresses",
                deadline,
                f"remove stale {vip} from {other}",
                NetworkInterfaceId=other,
                PrivateIpAddresses=[vip],
            )
        except AwsError as exc:
            cause = exc.__cause__ or exc
            if classify(cause) in (ErrorKind.INVALID, ErrorKind.NOT_FOUND):
                return  # already gone (AWS finished the move) or the ENI was deleted
            raise
        event(
            logging.INFO,
            f"removed stale copy of {vip} from {other} (still listed after the reassignment)",
            event="aws_duplicate_removed",
            eni=other,
        )


# ----------------------------------------------------------------------------- eip
class EipMode(Mode):
    name = "eip"
    resource_kind = "elastic-ip"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPv4Address,
        fence: Fence,
        allocation_id: str | None,
        public_ip: IPv4Address | None,
        private_ip: IPv4Address | None,
    ) -> None:
        super().__init__(api, ident, vip, fence)
        self.allocation_id = allocation_id
        self.public_ip = public_ip
        self.private_ip = private_ip

    @property
    def target_private_ip(self) -> str:
        ip = self.private_ip or self.ident.private_ip
        if ip is None:
            raise AwsConfigError("eip: the private IP to map the EIP to is unknown")
        return str(ip)

    async def validate(self, deadline: float) -> list[str]:
        if self.allocation_id is None:
            # allow configuring the EIP by its address (the VIP itself by default)
            public = str(self.public_ip or self.vip)
            resp = await self.api.call(
                "DescribeAddresses",
                deadline,
                f"find the allocation of {public}",
                PublicIps=[public],
            )
            found = [a for a in resp.get("Addresses", []) if a.get("AllocationId")]
            if not found:
                raise AwsConfigError(
                    f"eip: no VPC Elastic IP {public} in {self.ident.region}; set allocation_id"
                )
            self.allocation_id = str(found[0]["AllocationId"])
        resp = await self.api.call(
            "DescribeAddresses",
            deadline,
            "check allocation_id",
            AllocationIds=[self.allocation_id],
        )
        if not resp.get("Addresses"):
            raise AwsConfigError(f"eip: allocation {self.allocation_id} not found")
        if self.private_ip is None and self.ident.private_ip is None:
            raise AwsConfigError("eip: cannot tell the ENI's private IP; set private_ip")
        return []

    def describe_target(self) -> str:
        return f"{self.ident.eni_id}/{self.target_private_ip}"

    async def observe(self, deadline: float) -> dict[str, Any]:
        assert self.allocation_id is not None
        resp = await self.api.call(
            "DescribeAddresses",
            deadline,
            "read the EIP association",
            AllocationIds=[self.allocation_id],
        )
        addresses: list[dict[str, Any]] = resp.get("Addresses", [])
        if not addresses:
            raise AwsConfigError(f"eip: allocation {self.allocation_id} disappeared")
        return addresses[0]

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        assert self.allocation_id is not None
        addr: dict[str, Any] = obs
        plan = ModePlan()
        eni = addr.get("NetworkInterfaceId") or None
        private = addr.get("PrivateIpAddress") or None
        if eni:
            plan.owners = [f"{eni}/{private}"]
        plan.seen_epoch, plan.seen_holder = self.fence.read(addr.get("Tags"))
        self._fence_verdict(plan, epoch)
        plan.points_here = eni == self.ident.eni_id and private == self.target_private_ip
        tags_ok = not self.fence.enabled or (
            epoch is not None and (plan.seen_epoch, plan.seen_holder) == (epoch, self.fence.holder)
        )
        if not plan.points_here:
            plan.step, plan.todo = "associate", [self.allocation_id]
        elif not tags_ok:
            plan.step, plan.todo = "tag", [self.allocation_id]
        else:
            plan.ok = True
        plan.summary = (
            f"EIP {addr.get('PublicIp')} ({self.allocation_id}) -> {eni or 'nothing'}/"
            f"{private or '-'}; fence ({plan.seen_epoch}, {plan.seen_holder})"
        )
        return plan

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        assert self.allocation_id is not None
        if plan.step == "associate":
            # explicit AllowReassociation: the default differs between AWS and emulators,
            # and without it a dead master's association can never be taken over
            await self.api.call(
                "AssociateAddress",
                deadline,
                f"map {self.allocation_id} to {self.ident.eni_id}",
                AllocationId=self.allocation_id,
                NetworkInterfaceId=self.ident.eni_id,
                PrivateIpAddress=self.target_private_ip,
                AllowReassociation=True,
            )
            await self.tag_if_fencing([self.allocation_id], deadline, epoch)
        elif plan.step == "tag":
            await self.tag([self.allocation_id], deadline, epoch)


# ----------------------------------------------------------------------------- route
class RouteMode(Mode):
    name = "route"
    resource_kind = "route-table"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPv4Address,
        fence: Fence,
        route_table_ids: tuple[str, ...],
    ) -> None:
        super().__init__(api, ident, vip, fence)
        self.tables = route_table_ids

    @property
    def destination(self) -> str:
        return f"{self.vip}/32"

    async def validate(self, deadline: float) -> list[str]:
        warnings: list[str] = []
        resp = await self.api.call(
            "DescribeRouteTables",
            deadline,
            "check route_table_ids",
            RouteTableIds=list(self.tables),
        )
        tables = resp.get("RouteTables", [])
        found = {t.get("RouteTableId") for t in tables}
        missing = [t for t in self.tables if t not in found]
        if missing:
            raise AwsConfigError(f"route: route tables not found: {', '.join(missing)}")
        local: list[IPv4Network] = list(self.ident.vpc_cidrs)
        for table in tables:
            if self.ident.vpc_id and table.get("VpcId") not in (None, self.ident.vpc_id):
                warnings.append(
                    f"route table {table.get('RouteTableId')} is in {table.get('VpcId')}, "
                    f"not in the ENI's VPC {self.ident.vpc_id}"
                )
            for route in table.get("Routes", []):
                cidr = route.get("DestinationCidrBlock")
                if route.get("GatewayId") == "local" and cidr:
                    local.append(IPv4Network(cidr, strict=False))
        inside = [str(n) for n in local if self.vip in n]
        if inside:
            raise AwsConfigError(
                f"route: VIP {self.vip} lies inside the VPC CIDR {inside[0]}; an overlay VIP "
                "must be outside every VPC CIDR (a route more specific than local is only "
                "allowed for a whole subnet)"
            )
        if self.ident.source_dest_check:
            warnings.append(
                f"source/destination check is on for {self.ident.eni_id}: EC2 drops packets "
                f"routed to {self.vip} there; disable it on every candidate ENI "
                "(aws ec2 modify-network-interface-attribute --no-source-dest-check)"
            )
        return warnings

    async def observe(self, deadline: float) -> dict[str, dict[str, Any]]:
        resp = await self.api.call(
            "DescribeRouteTables",
            deadline,
            "read the VIP routes",
            RouteTableIds=list(self.tables),
        )
        return {str(t.get("RouteTableId")): t for t in resp.get("RouteTables", [])}

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        by_id: dict[str, dict[str, Any]] = obs
        plan = ModePlan()
        wrong: list[str] = []
        untagged: list[str] = []
        details = []
        for table_id in self.tables:
            table = by_id.get(table_id)
            if table is None:
                raise AwsConfigError(f"route: route table {table_id} disappeared")
            route = next(
                (
                    r
                    for r in table.get("Routes", [])
                    if r.get("DestinationCidrBlock") == self.destination
                ),
                None,
            )
            target = route.get("NetworkInterfaceId") if route else None
            state = route.get("State") if route else None
            if route is not None:
                plan.present.append(table_id)
            if target:
                plan.owners.append(f"{table_id}->{target}")
            # blackhole means the ENI is gone or detached: never "pointing here"
            if target != self.ident.eni_id or state == "blackhole":
                wrong.append(table_id)
            e, holder = self.fence.read(table.get("Tags"))
            if e > plan.seen_epoch:
                plan.seen_epoch, plan.seen_holder = e, holder
            if self.fence.enabled and (epoch is None or (e, holder) != (epoch, self.fence.holder)):
                untagged.append(table_id)
            details.append(f"{table_id}:{target or 'none'}({state or '-'})")
        self._fence_verdict(plan, epoch)
        plan.points_here = not wrong
        if wrong:
            plan.step, plan.todo = "route:" + ",".join(wrong), wrong
        elif untagged:
            plan.step, plan.todo = "tag:" + ",".join(untagged), untagged
        else:
            plan.ok = True
        plan.summary = f"{self.destination} " + " ".join(details)
        return plan

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        if plan.step and plan.step.startswith("route:"):
            # one call per table; not atomic across tables, hence the read-back of all
            for table_id in plan.todo:
                await self._point(table_id, deadline, present=table_id in plan.present)
            await self.tag_if_fencing(list(self.tables), deadline, epoch)
        elif plan.step and plan.step.startswith("tag:"):
            await self.tag(plan.todo, deadline, epoch)

    async def _point(self, table_id: str, deadline: float, present: bool) -> None:
        params = {
            "RouteTableId": table_id,
            "DestinationCidrBlock": self.destination,
            "NetworkInterfaceId": self.ident.eni_id,
        }
        first, second = (
            ("ReplaceRoute", "CreateRoute") if present else ("CreateRoute", "ReplaceRoute")
        )
        try:
            await self.api.call(first, deadline, f"{table_id} {self.destination}", **params)
        except AwsError as exc:
            # RouteAlreadyExists / "no route, use CreateRoute" (InvalidParameterValue):
            # the table changed since our read; the other call is the right one
            if exc.code not in ("RouteAlreadyExists", "InvalidParameterValue"):
                raise
            await self.api.call(second, deadline, f"{table_id} {self.destination}", **params)
