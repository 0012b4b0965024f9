"""The three ways to point a VIP at this node, each as read -> plan -> act.

Each mode reads the current EC2 state, compares it with "the VIP points at our ENI and
carries our fencing tags", and names the next step. The provider runs these through
`converge` (providers.aws.retry), which re-reads until EC2 shows the result.

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
from ipaddress import IPv4Address
from typing import Any

from providers.aws.api import Ec2Api
from providers.aws.errors import AwsConfigError, AwsError, Cause, classify
from providers.aws.identity import Identity
from providers.aws.retry import Plan
from sidecar.log import event


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
class Probes:
    calls: list[tuple[str, dict[str, Any]]]  # (operation, parameters) to run with DryRun
    unprobed: list[str]  # "Operation" or "Operation on <what> (why)"
    tag_resource: str


@dataclass
class ModePlan(Plan):
    points_here: bool = False
    seen_epoch: int = 0  # highest epoch tag for this VIP anywhere we looked
    seen_holder: str | None = None  # who wrote it
    fence_lost: bool = False  # someone else holds a higher epoch than our claim
    owners: list[str] = field(default_factory=list)  # where EC2 says the VIP points
    todo: list[str] = field(default_factory=list)  # resource ids the step acts on
    present: list[str] = field(default_factory=list)  # route: tables that have the route


class Mode:
    """Base: the resource kind, how to read it, how to act on it."""

    name = ""

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

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        """The calls `vip-sidecar check` dry-runs to prove this mode's IAM permissions,
        the actions it cannot probe, and the resource that carries the fencing tags.
        dry_run_trusted: the endpoint honours DryRun on every call (not an emulator)."""
        raise NotImplementedError


# ----------------------------------------------------------------------------- secondary-ip
@dataclass
class SubnetView:
    enis: list[dict[str, Any]]
    local_ipv4s: list[str] | None  # IMDS view of our ENI; None when not checked


class SecondaryIpMode(Mode):
    name = "secondary-ip"

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

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        eni = self.ident.eni_id
        return Probes(
            [("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni]})],
            ["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"],
            eni,
        )

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
            if classify(cause) in (Cause.INVALID, Cause.NOT_FOUND):
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

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        assert self.allocation_id is not None
        associate = {
            "AllocationId": self.allocation_id,
            "NetworkInterfaceId": self.ident.eni_id,
            "PrivateIpAddress": self.target_private_ip,
            "AllowReassociation": True,
        }
        return Probes(
            [
                ("DescribeAddresses", {"AllocationIds": [self.allocation_id]}),
                ("AssociateAddress", associate),
            ],
            [],
            self.allocation_id,
        )

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
