"""Mode `eip`: AssociateAddress(AllowReassociation) of an Elastic IP to this ENI."""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Any

from vip_sidecar.inet import IPAddress
from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError
from vip_sidecar.providers.aws.identity import Identity
from vip_sidecar.providers.aws.modes import Fence, Mode, ModePlan, Probes


class EipMode(Mode):
    name = "eip"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPAddress,
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

    async def tag_sets(self, deadline: float) -> dict[str, list[dict[str, str]]]:
        assert self.allocation_id is not None
        return {self.allocation_id: (await self.observe(deadline)).get("Tags", [])}

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
        plan.see(self.fence.read(addr.get("Tags")))
        self._note_tags(plan, self.allocation_id, addr.get("Tags"))
        self._fence_verdict(plan, epoch)
        plan.points_here = eni == self.ident.eni_id and private == self.target_private_ip
        plan.fenced = not self.fence.enabled or (
            epoch is not None and plan.seen == self.fence.claim(epoch)
        )
        if not plan.points_here:
            plan.step, plan.todo = "associate", [self.allocation_id]
        elif not plan.fenced:
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
            if not plan.fenced:
                await self.fence_first([self.allocation_id], deadline, epoch, plan)
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
        elif plan.step == "tag":
            await self.tag([self.allocation_id], deadline, epoch, plan)
