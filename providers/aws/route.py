"""Mode `route`: ReplaceRoute/CreateRoute <vip>/32 (IPv6: <vip>/128, as
DestinationIpv6CidrBlock) -> this ENI in each route table."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from vip_sidecar.inet import IPAddress
from vip_sidecar.providers.aws.api import Ec2Api
from vip_sidecar.providers.aws.errors import AwsConfigError, AwsError
from vip_sidecar.providers.aws.identity import Identity
from vip_sidecar.providers.aws.modes import Fence, Mode, ModePlan, Probes


class RouteMode(Mode):
    name = "route"

    def __init__(
        self,
        api: Ec2Api,
        ident: Identity,
        vip: IPAddress,
        fence: Fence,
        route_table_ids: tuple[str, ...],
    ) -> None:
        super().__init__(api, ident, vip, fence)
        self.tables = route_table_ids
        # EC2 keeps IPv4 and IPv6 destinations in separate fields (and parameters)
        self.key = "DestinationCidrBlock" if vip.version == 4 else "DestinationIpv6CidrBlock"

    @property
    def destination(self) -> str:
        return f"{self.vip}/{self.vip.max_prefixlen}"

    def _route(self, table: dict[str, Any]) -> dict[str, Any] | None:
        """The table's route for the VIP (IPv6 destinations compared canonically)."""
        want = ip_network(self.destination)
        for route in table.get("Routes", []):
            dest = route.get(self.key)
            if not dest:
                continue
            try:
                if ip_network(dest, strict=False) == want:
                    return dict(route)
            except ValueError:
                continue
        return None

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
        local: list[IPv4Network | IPv6Network] = [*self.ident.vpc_cidrs, *self.ident.vpc_ipv6_cidrs]
        for table in tables:
            if self.ident.vpc_id and table.get("VpcId") not in (None, self.ident.vpc_id):
                warnings.append(
                    f"route table {table.get('RouteTableId')} is in {table.get('VpcId')}, "
                    f"not in the ENI's VPC {self.ident.vpc_id}"
                )
            for route in table.get("Routes", []):
                cidr = route.get(self.key)
                if route.get("GatewayId") == "local" and cidr:
                    local.append(ip_network(cidr, strict=False))
        inside = [str(n) for n in local if n.version == self.vip.version and self.vip in n]
        if inside:
            raise AwsConfigError(
                f"route: VIP {self.vip} lies inside the VPC CIDR {inside[0]}; an overlay VIP "
                "must be outside every VPC CIDR (a route more specific than local is only "
                "allowed for a whole subnet)"
            )
        if self.ident.source_dest_check:
            # a route to an ENI that checks source/destination is a black hole: refuse to
            # be ready (init is retried, so turning it off makes the node ready again)
            raise AwsConfigError(
                f"route: source/destination check is on for {self.ident.eni_id}: EC2 drops "
                f"packets routed to {self.vip} there; disable it on every candidate ENI "
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
            route = self._route(table)
            target = route.get("NetworkInterfaceId") if route else None
            state = route.get("State") if route else None
            if route is not None:
                plan.present.append(table_id)
            if target:
                plan.owners.append(f"{table_id}->{target}")
            # blackhole means the ENI is gone or detached: never "pointing here"
            if target != self.ident.eni_id or state == "blackhole":
                wrong.append(table_id)
            claim = self.fence.read(table.get("Tags"))
            plan.see(claim)
            self._note_tags(plan, table_id, table.get("Tags"))
            if self.fence.enabled and (epoch is None or claim != self.fence.claim(epoch)):
                untagged.append(table_id)
            details.append(f"{table_id}:{target or 'none'}({state or '-'})")
        self._fence_verdict(plan, epoch)
        plan.fenced = not untagged
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
            if not plan.fenced:
                await self.fence_first(list(self.tables), deadline, epoch, plan)
            # one call per table; not atomic across tables, hence the read-back of all
            for table_id in plan.todo:
                await self._point(table_id, deadline, present=table_id in plan.present)
        elif plan.step and plan.step.startswith("tag:"):
            await self.tag(plan.todo, deadline, epoch, plan)

    async def tag_sets(self, deadline: float) -> dict[str, list[dict[str, str]]]:
        tables = await self.observe(deadline)
        return {t: tables[t].get("Tags", []) for t in self.tables if t in tables}

    async def permission_probes(self, deadline: float, dry_run_trusted: bool) -> Probes:
        probes = Probes(
            [("DescribeRouteTables", {"RouteTableIds": list(self.tables)})], [], self.tables[0]
        )
        tables = await self.observe(deadline)
        for table_id in self.tables:
            route = self._route(tables[table_id])
            params = {"RouteTableId": table_id, self.key: self.destination}
            if route is not None and route.get("NetworkInterfaceId"):
                # the current target: harmless even where DryRun is ignored (moto)
                params["NetworkInterfaceId"] = route["NetworkInterfaceId"]
                probes.calls.append(("ReplaceRoute", params))
            elif dry_run_trusted:
                params["NetworkInterfaceId"] = self.ident.eni_id
                probes.calls.append(("CreateRoute", params))
            else:
                probes.unprobed.append(
                    f"CreateRoute on {table_id} (custom endpoint: emulators "
                    "ignore DryRun on routes and would create it)"
                )
        return probes

    async def _point(self, table_id: str, deadline: float, present: bool) -> None:
        params = {
            "RouteTableId": table_id,
            self.key: self.destination,
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
