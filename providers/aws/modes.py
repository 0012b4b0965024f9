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

import hashlib
from dataclasses import dataclass, field
from typing import Any

from vip_sidecar.inet import IPAddress
from vip_sidecar.providers.aws.api import Ec2Api
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
    vip: IPAddress
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

    def __init__(self, api: Ec2Api, ident: Identity, vip: IPAddress, fence: Fence) -> None:
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
