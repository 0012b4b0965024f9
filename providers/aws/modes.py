"""The three ways to point a VIP at this node, each as read -> plan -> act.

Each mode reads the current EC2 state, compares it with "the VIP points at our ENI and
carries our fencing tags", and names the next step. The provider runs these through
`converge` (vip_sidecar.providers.aws.retry), which re-reads until EC2 shows the result.

Fencing: a claim `<epoch>:<holder>` is stored as one tag per VIP on the moved resource
(the ENI that holds the secondary IP, the EIP allocation, each route table), written
*before* the move. A takeover claims max(epoch seen) + 1; claims are ordered by epoch,
then holder. A node that later sees a higher claim by someone else has lost the VIP to
a newer master and must not re-take it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from vip_sidecar.log import event
from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsError, Cause, classify
from vip_sidecar.providers.aws.identity import Identity
from vip_sidecar.providers.aws.retry import Plan

# EC2 tag limits: 50 tags per resource, values up to 256 characters
TAG_BUDGET = 50
TAG_VALUE_MAX = 256
_EPOCH_DIGITS = 20  # room kept in the value for "<epoch>:"


def bound_holder(node: str, eni_id: str) -> str:
    """`node/eni`, shortened to fit a tag value next to the epoch. A long node name is cut
    and suffixed with a hash of the whole name, so two long names stay distinct."""
    full = f"{node}/{eni_id}"
    room = TAG_VALUE_MAX - _EPOCH_DIGITS - 1
    if len(full) <= room:
        return full
    digest = hashlib.sha256(node.encode()).hexdigest()[:12]
    keep = room - len(eni_id) - len(digest) - 2
    return f"{node[:keep]}~{digest}/{eni_id}"


@dataclass(frozen=True, order=True)
class Claim:
    """A fencing claim: ordered by epoch, ties broken by holder (deterministic on every
    node: the same two claims always compare the same way)."""

    epoch: int = 0
    holder: str = ""


NO_CLAIM = Claim()


@dataclass(frozen=True)
class Fence:
    """The tag of one VIP (`<prefix><vip>` = `<epoch>:<holder>`) and this node's claim."""

    prefix: str
    vip: IPv4Address
    holder: str  # bound_holder(): node name / ENI, unique even when hostnames repeat
    enabled: bool = True

    @property
    def key(self) -> str:
        return f"{self.prefix}{self.vip}"

    @property
    def legacy_keys(self) -> tuple[str, str]:
        """The two tags per VIP older releases wrote (read for upgrades, then removed)."""
        return f"{self.key}/epoch", f"{self.key}/holder"

    def read(self, tags: list[dict[str, str]] | None) -> Claim:
        """The claim in an EC2 tag list; NO_CLAIM when absent or unreadable."""
        values = {t.get("Key"): t.get("Value") for t in tags or []}
        raw = values.get(self.key)
        if raw is not None:
            epoch, _, holder = raw.partition(":")
            try:
                return Claim(int(epoch), holder)
            except ValueError:
                return NO_CLAIM
        epoch_key, holder_key = self.legacy_keys
        try:
            return Claim(int(values.get(epoch_key) or 0), values.get(holder_key) or "")
        except ValueError:
            return NO_CLAIM

    def claim(self, epoch: int) -> Claim:
        return Claim(epoch, self.holder)

    def value(self, epoch: int) -> str:
        return f"{epoch}:{self.holder}"[:TAG_VALUE_MAX]

    def tags(self, epoch: int) -> list[dict[str, str]]:
        return [{"Key": self.key, "Value": self.value(epoch)}]

    def stale_keys(self, tags: list[dict[str, str]] | None) -> list[str]:
        """Tags of this VIP that are no longer written (the legacy pair)."""
        present = {t.get("Key") for t in tags or []}
        return [k for k in self.legacy_keys if k in present]

    def budget_needed(self, tags: list[dict[str, str]] | None) -> int:
        """Tags on the resource once our claim is written and the legacy pair removed."""
        keys = {str(t.get("Key")) for t in tags or []}
        return len((keys - set(self.legacy_keys)) | {self.key})


@dataclass
class Probes:
    calls: list[tuple[str, dict[str, Any]]]  # (operation, parameters) to run with DryRun
    unprobed: list[str]  # "Operation" or "Operation on <what> (why)"
    tag_resource: str


@dataclass
class ModePlan(Plan):
    points_here: bool = False
    seen: Claim = NO_CLAIM  # the highest claim for this VIP anywhere we looked
    fence_lost: bool = False  # someone else holds a higher claim than ours
    fenced: bool = False  # our claim is visible on the resource(s) we move
    owners: list[str] = field(default_factory=list)  # where EC2 says the VIP points
    todo: list[str] = field(default_factory=list)  # resource ids the step acts on
    present: list[str] = field(default_factory=list)  # route: tables that have the route
    # resource -> tag keys of this VIP that are no longer written (removed with our tag)
    stale_tags: dict[str, list[str]] = field(default_factory=dict)

    @property
    def seen_epoch(self) -> int:
        return self.seen.epoch

    @property
    def seen_holder(self) -> str | None:
        return self.seen.holder or None

    def see(self, claim: Claim) -> None:
        self.seen = max(self.seen, claim)


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
        # a tie in epoch is broken by holder, the same way on every node: two masters of a
        # split brain that both claimed epoch n never both keep re-asserting
        if epoch is not None and self.fence.enabled:
            plan.fence_lost = plan.seen > self.fence.claim(epoch)

    def _note_tags(self, plan: ModePlan, resource: str, tags: list[dict[str, str]] | None) -> None:
        stale = self.fence.stale_keys(tags)
        if stale:
            plan.stale_tags[resource] = stale

    async def tag(
        self, resources: list[str], deadline: float, epoch: int, plan: ModePlan | None = None
    ) -> None:
        await self.api.call(
            "CreateTags",
            deadline,
            "write fencing epoch",
            Resources=resources,
            Tags=self.fence.tags(epoch),
        )
        # the legacy two-tag pair of this VIP, only on resources we write anyway
        for resource in resources:
            stale = (plan.stale_tags if plan is not None else {}).get(resource)
            if stale:
                await self.api.call(
                    "DeleteTags",
                    deadline,
                    "remove superseded fencing tags",
                    Resources=[resource],
                    Tags=[{"Key": k} for k in stale],
                )

    async def fence_first(
        self, resources: list[str], deadline: float, epoch: int, plan: ModePlan
    ) -> None:
        """The claim is written *before* the move: a node that sees the move also finds
        the claim once EC2's reads catch up, and one that sees only the claim already knows
        it lost. Moving first let an old master read "untagged drift" and take it back."""
        if self.fence.enabled:
            await self.tag(resources, deadline, epoch, plan)

    def describe_target(self) -> str:
        return self.ident.eni_id

    async def tag_sets(self, deadline: float) -> dict[str, list[dict[str, str]]]:
        """The current tags of every resource this mode writes its claim to."""
        resp = await self.api.call(
            "DescribeNetworkInterfaces",
            deadline,
            "read the tags of our ENI",
            NetworkInterfaceIds=[self.ident.eni_id],
        )
        enis = resp.get("NetworkInterfaces", [])
        return {self.ident.eni_id: enis[0].get("TagSet", []) if enis else []}

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
        emulator_compat: bool = False,
    ) -> None:
        super().__init__(api, ident, vip, fence)
        # moto keeps a reassigned address on both ENIs and matches the address filter on
        # primaries only; only then are duplicates real (and removed) and the subnet listed
        self.emulator_compat = emulator_compat
        self.untouchable: set[str] = set()
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

    async def _enis(self, deadline: float, flt: dict[str, Any] | None, why: str) -> list[Any]:
        filters: list[dict[str, Any]] = [{"Name": "subnet-id", "Values": [self.ident.subnet_id]}]
        if flt is not None:
            filters.append(flt)
        enis: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Filters": filters}
            if token:
                params["NextToken"] = token
            resp = await self.api.call("DescribeNetworkInterfaces", deadline, why, **params)
            enis.extend(resp.get("NetworkInterfaces", []))
            token = resp.get("NextToken")
            if not token:
                return enis

    async def observe(self, deadline: float) -> SubnetView:
        # two filtered reads instead of paging the subnet: who lists the VIP
        # (addresses.private-ip-address matches secondary addresses on EC2), and who
        # carries a claim for it. Emulators that match primaries only get the subnet.
        if self.emulator_compat:
            found = await self._enis(deadline, None, "list the subnet (emulator mode)")
        else:
            found = await self._enis(
                deadline,
                {"Name": "addresses.private-ip-address", "Values": [str(self.vip)]},
                "find who holds the VIP",
            )
            if self.fence.enabled:
                keys = [self.fence.key, *self.fence.legacy_keys]
                found += await self._enis(
                    deadline, {"Name": "tag-key", "Values": keys}, "find the VIP's claims"
                )
        by_id = {str(e.get("NetworkInterfaceId")): e for e in found}
        local = None
        if self.local_ipv4s is not None:
            local = await asyncio.to_thread(self.local_ipv4s)
        return SubnetView(list(by_id.values()), local)

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        vip = str(self.vip)
        view: SubnetView = obs
        plan = ModePlan()
        own: dict[str, Any] | None = None
        for eni in view.enis:
            ips = {p.get("PrivateIpAddress") for p in eni.get("PrivateIpAddresses", [])}
            if eni.get("NetworkInterfaceId") == self.ident.eni_id:
                own = eni
            if vip in ips:
                plan.owners.append(str(eni.get("NetworkInterfaceId")))
            plan.see(self.fence.read(eni.get("TagSet")))
        own_tags = own.get("TagSet") if own is not None else None
        self._note_tags(plan, self.ident.eni_id, own_tags)
        self._fence_verdict(plan, epoch)
        others = [o for o in plan.owners if o != self.ident.eni_id]
        plan.points_here = self.ident.eni_id in plan.owners
        own_claim = self.fence.read(own_tags)
        plan.fenced = not self.fence.enabled or (
            epoch is not None and own_claim == self.fence.claim(epoch)
        )
        removable = [o for o in others if o not in self.untouchable]
        if not plan.points_here:
            plan.step, plan.todo = "assign", [self.ident.eni_id]
        elif not plan.fenced:
            plan.step, plan.todo = "tag", [self.ident.eni_id]
        elif removable and self.emulator_compat:
            # an emulator keeps a reassigned address on both ENIs; EC2 never does
            plan.step, plan.todo = "unassign:" + ",".join(sorted(removable)), sorted(removable)
        elif view.local_ipv4s is not None and vip not in view.local_ipv4s:
            plan.step = None  # EC2 agrees; wait (no action) until the instance sees it too
        else:
            # other listings are stale reads on EC2 (AllowReassignment moved the address):
            # never unassign them, that could remove a newer master's copy
            plan.ok = True
        plan.summary = (
            f"VIP {vip} on {plan.owners or 'no ENI'}; fence {own_claim.epoch}:"
            f"{own_claim.holder or '-'}"
        )
        if others and not plan.step:
            plan.summary += f"; stale listing on {', '.join(others)} (EC2 moved it)"
        if view.local_ipv4s is not None:
            plan.summary += f"; IMDS local-ipv4s {'has' if vip in view.local_ipv4s else 'lacks'} it"
        return plan

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        vip = str(self.vip)
        if plan.step == "assign":
            if not plan.fenced:
                await self.fence_first([self.ident.eni_id], deadline, epoch, plan)
            await self.api.call(
                "AssignPrivateIpAddresses",
                deadline,
                f"move {vip} to {self.ident.eni_id}",
                NetworkInterfaceId=self.ident.eni_id,
                PrivateIpAddresses=[vip],
                AllowReassignment=True,
            )
        elif plan.step and plan.step.startswith("unassign:"):
            for other in plan.todo:
                await self._unassign_duplicate(other, deadline)
        elif plan.step == "tag":
            await self.tag([self.ident.eni_id], deadline, epoch, plan)

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        eni = self.ident.eni_id
        unprobed = ["AssignPrivateIpAddresses"]
        if self.emulator_compat:
            unprobed.append("UnassignPrivateIpAddresses")
        describe = ("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni]})
        return Probes([describe], unprobed, eni)

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
            if classify(cause) is Cause.DENIED:
                # an ENI the role may not touch: the copy is harmless to our claim
                self.untouchable.add(other)
                event(
                    logging.WARNING,
                    f"cannot remove the copy of {vip} on {other} (not permitted); leaving it",
                    event="aws_duplicate_kept",
                    eni=other,
                )
                return
            raise
        event(
            logging.INFO,
            f"removed stale copy of {vip} from {other} (still listed after the reassignment)",
            event="aws_duplicate_removed",
            eni=other,
        )
