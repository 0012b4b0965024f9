"""Mode `secondary-ip`: the VIP is an address of the nodes' shared subnet, moved between
their ENIs. One mode, two address families:

* IPv4: AssignPrivateIpAddresses(AllowReassignment=True) on our ENI *moves* the address
  in one call; the old holder is never touched (an unassigned address could be handed to
  another instance by EC2 meanwhile).
* IPv6: AssignIpv6Addresses has no AllowReassignment (botocore's model): EC2 refuses an
  address another ENI holds. So a takeover unassigns it from the old holder first
  (UnassignIpv6Addresses), then assigns it here; a refusal while EC2 still sees the old
  holder is retried briefly. The fencing claim is written before either call, as for
  IPv4, so a node that sees the address gone also finds the newer claim.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv6Network, ip_address
from typing import Any

from vip_sidecar.inet import IPAddress
from vip_sidecar.log import event
from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsError, Cause, classify
from vip_sidecar.providers.aws.identity import Identity
from vip_sidecar.providers.aws.modes import Fence, Mode, ModePlan, Probes

# the states of a subnet's IPv6 CIDR association that mean "not usable"; anything else
# counts, because moto reports the state as the text "{'State': 'associated'}"
_DEAD_ASSOCIATION = ("disassociating", "disassociated", "failing", "failed")
# AssignIpv6Addresses refused because EC2 still sees the address on the old holder
_IN_USE_RETRIES = 6


@dataclass(frozen=True)
class Family:
    """What differs between moving an IPv4 and an IPv6 secondary address."""

    version: int
    filter: str  # DescribeNetworkInterfaces filter matching an ENI that holds an address
    imds_leaf: str  # the IMDS list of our ENI's addresses (AWS's remap confirmation)
    assign: str
    unassign: str
    param: str  # the address list parameter of both calls

    def addresses(self, eni: dict[str, Any]) -> set[str]:
        """The ENI's addresses of this family, in Python's canonical (compressed) form."""
        if self.version == 4:
            return {str(p.get("PrivateIpAddress")) for p in eni.get("PrivateIpAddresses", [])}
        return {_canonical(p.get("Ipv6Address")) for p in eni.get("Ipv6Addresses", [])}


def _canonical(text: Any) -> str:
    try:
        return str(ip_address(str(text).strip()))
    except ValueError:
        return str(text)


IPV4 = Family(
    4,
    "addresses.private-ip-address",
    "local-ipv4s",
    "AssignPrivateIpAddresses",
    "UnassignPrivateIpAddresses",
    "PrivateIpAddresses",
)
IPV6 = Family(
    6,
    "ipv6-addresses.ipv6-address",
    "ipv6s",
    "AssignIpv6Addresses",
    "UnassignIpv6Addresses",
    "Ipv6Addresses",
)


@dataclass
class SubnetView:
    enis: list[dict[str, Any]]
    local: list[str] | None  # IMDS view of our ENI's addresses; None when not checked


class SecondaryIpMode(Mode):
    name = "secondary-ip"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPAddress,
        fence: Fence,
        local_addresses: Callable[[], list[str] | None] | None = None,
        emulator_compat: bool = False,
    ) -> None:
        super().__init__(api, ident, vip, fence)
        self.family = IPV4 if vip.version == 4 else IPV6
        # moto keeps a reassigned address on both ENIs and matches the address filter on
        # primaries only; only then are duplicates real (and removed) and the subnet listed
        self.emulator_compat = emulator_compat
        self.untouchable: set[str] = set()
        # the instance's own view (IMDS local-ipv4s / ipv6s) is AWS's documented
        # confirmation that a remap reached this instance; describe calls can be ahead of it
        self.local_addresses = local_addresses

    async def validate(self, deadline: float) -> list[str]:
        if self.ident.subnet_id is None:
            raise AwsConfigError("secondary-ip: the ENI's subnet is unknown")
        if self.family.version == 6:
            await self._validate_ipv6(deadline)
            return []
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
        return []

    async def _validate_ipv6(self, deadline: float) -> None:
        """The VIP must lie in one of the subnet's IPv6 CIDRs. EC2 enforces this on
        assign; moto does not, so the check is ours."""
        cidrs = self.ident.subnet_ipv6_cidrs
        if cidrs is None:
            resp = await self.api.call(
                "DescribeSubnets",
                deadline,
                "read the subnet's IPv6 CIDRs",
                SubnetIds=[self.ident.subnet_id],
            )
            cidrs = tuple(
                IPv6Network(a["Ipv6CidrBlock"], strict=False)
                for s in resp.get("Subnets", [])
                for a in s.get("Ipv6CidrBlockAssociationSet", [])
                if a.get("Ipv6CidrBlock")
                and (a.get("Ipv6CidrBlockState") or {}).get("State") not in _DEAD_ASSOCIATION
            )
            self.ident.subnet_ipv6_cidrs = cidrs
        if not any(self.vip in n for n in cidrs):
            shown = ", ".join(map(str, cidrs)) or "no IPv6 CIDR"
            raise AwsConfigError(
                f"secondary-ip: IPv6 VIP {self.vip} is outside subnet {self.ident.subnet_id} "
                f"({shown}) of {self.ident.eni_id}; an IPv6 secondary address must belong to "
                "one of the subnet's IPv6 CIDRs (use mode route across subnets/AZs)"
            )

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
        # two filtered reads instead of paging the subnet: who lists the VIP (the address
        # filter matches secondary addresses on EC2), and who carries a claim for it.
        # Emulators that lack the filter or match primaries only get the subnet.
        if self.emulator_compat:
            found = await self._enis(deadline, None, "list the subnet (emulator mode)")
        else:
            found = await self._enis(
                deadline,
                {"Name": self.family.filter, "Values": [str(self.vip)]},
                "find who holds the VIP",
            )
            if self.fence.enabled:
                keys = [self.fence.key, *self.fence.legacy_keys]
                found += await self._enis(
                    deadline, {"Name": "tag-key", "Values": keys}, "find the VIP's claims"
                )
        by_id = {str(e.get("NetworkInterfaceId")): e for e in found}
        local = None
        if self.local_addresses is not None:
            local = await asyncio.to_thread(self.local_addresses)
            if local is not None:
                local = [_canonical(a) for a in local]
        return SubnetView(list(by_id.values()), local)

    def plan(self, obs: Any, epoch: int | None) -> ModePlan:
        vip = str(self.vip)
        view: SubnetView = obs
        plan = ModePlan()
        own: dict[str, Any] | None = None
        for eni in view.enis:
            if eni.get("NetworkInterfaceId") == self.ident.eni_id:
                own = eni
            if vip in self.family.addresses(eni):
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
            # IPv6: act() frees it on every listed holder first (todo), then assigns
            plan.step, plan.todo = "assign", others if self.family.version == 6 else []
        elif not plan.fenced:
            plan.step, plan.todo = "tag", [self.ident.eni_id]
        elif removable and self.emulator_compat:
            # an emulator can list one address on two ENIs; EC2 never does
            plan.step, plan.todo = "unassign:" + ",".join(sorted(removable)), sorted(removable)
        elif view.local is not None and vip not in view.local:
            plan.step = None  # EC2 agrees; wait (no action) until the instance sees it too
        else:
            # other listings are stale reads on EC2 (the address moved, or our unassign
            # has not shown yet): never unassign them, that could remove a newer master's
            plan.ok = True
        plan.summary = (
            f"VIP {vip} on {plan.owners or 'no ENI'}; fence {own_claim.epoch}:"
            f"{own_claim.holder or '-'}"
        )
        if others and not plan.step:
            plan.summary += f"; stale listing on {', '.join(others)} (EC2 moved it)"
        if view.local is not None:
            has = "has" if vip in view.local else "lacks"
            plan.summary += f"; IMDS {self.family.imds_leaf} {has} it"
        return plan

    async def act(self, plan: ModePlan, deadline: float, epoch: int) -> None:
        vip = str(self.vip)
        if plan.step == "assign":
            if not plan.fenced:
                await self.fence_first([self.ident.eni_id], deadline, epoch, plan)
            if self.family.version == 4:
                await self.api.call(
                    self.family.assign,
                    deadline,
                    f"move {vip} to {self.ident.eni_id}",
                    NetworkInterfaceId=self.ident.eni_id,
                    PrivateIpAddresses=[vip],
                    AllowReassignment=True,
                )
                return
            for other in plan.todo:
                await self._unassign(other, deadline, "take it from the previous holder")
            await self._assign_ipv6(deadline)
        elif plan.step and plan.step.startswith("unassign:"):
            for other in plan.todo:
                await self._unassign(other, deadline, "remove a stale copy")
        elif plan.step == "tag":
            await self.tag([self.ident.eni_id], deadline, epoch, plan)

    async def _assign_ipv6(self, deadline: float) -> None:
        """AssignIpv6Addresses, retried briefly while EC2 still sees the old holder (the
        unassign is asynchronous too). A refusal never fails the move by itself: the
        caller's read-back decides, so a refusal because the address is ours already (a
        read that lagged our own earlier assign) cannot demote the node."""
        vip = str(self.vip)
        delays = self.api.backoff.delays()
        for attempt in range(_IN_USE_RETRIES):
            try:
                await self.api.call(
                    self.family.assign,
                    deadline,
                    f"assign {vip} to {self.ident.eni_id}",
                    NetworkInterfaceId=self.ident.eni_id,
                    Ipv6Addresses=[vip],
                )
                return
            except AwsError as exc:
                if classify(exc.__cause__ or exc) is not Cause.INVALID:
                    raise
                if await self._own_eni_holds_vip(deadline):
                    return
                delay = next(delays)
                if attempt == _IN_USE_RETRIES - 1 or not self.api.can_mutate_by(deadline - delay):
                    return
                event(
                    logging.INFO,
                    f"aws: {vip} still in use as EC2 sees it ({exc.code}); retrying the "
                    f"assign in {delay:.2f}s",
                    vip=self.api.vip_name,
                    event="aws_assign_in_use",
                    code=exc.code,
                )
                await self.api.sleep(delay)

    async def _own_eni_holds_vip(self, deadline: float) -> bool:
        resp = await self.api.call(
            "DescribeNetworkInterfaces",
            deadline,
            "does our ENI hold the VIP already",
            NetworkInterfaceIds=[self.ident.eni_id],
        )
        enis = resp.get("NetworkInterfaces", [])
        return bool(enis) and str(self.vip) in self.family.addresses(enis[0])

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        eni = self.ident.eni_id
        unprobed = [self.family.assign]
        if self.emulator_compat or self.family.version == 6:
            unprobed.append(self.family.unassign)
        calls: list[tuple[str, dict[str, Any]]] = [
            ("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni]})
        ]
        if self.family.version == 6:
            # read at init when IMDS does not name the subnet's IPv6 CIDRs
            calls.append(("DescribeSubnets", {"SubnetIds": [self.ident.subnet_id]}))
        return Probes(calls, unprobed, eni)

    async def _unassign(self, other: str, deadline: float, why: str) -> None:
        vip = str(self.vip)
        try:
            await self.api.call(
                self.family.unassign,
                deadline,
                f"{why}: {vip} from {other}",
                NetworkInterfaceId=other,
                **{self.family.param: [vip]},
            )
        except AwsError as exc:
            cause = exc.__cause__ or exc
            if classify(cause) in (Cause.INVALID, Cause.NOT_FOUND):
                return  # already gone (AWS finished the move) or the ENI was deleted
            if classify(cause) is Cause.DENIED and self.family.version == 4:
                # an ENI the role may not touch: the copy is harmless to our claim (for
                # IPv6 it is not: the assign cannot succeed, so the denial is raised)
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
            f"removed {vip} from {other} ({why})",
            event="aws_duplicate_removed" if self.family.version == 4 else "aws_unassigned",
            eni=other,
        )
