"""AWS provider: point the VIP at this node through the EC2 API.

Modes (option `mode`):
  secondary-ip  AssignPrivateIpAddresses(AllowReassignment) on this node's ENI; pair
                with the alias provider (`providers: [aws, alias]`) for the OS copy
  eip           AssociateAddress(AllowReassociation) of an Elastic IP to this ENI
  route         ReplaceRoute/CreateRoute <vip>/32 -> this ENI in each route table

Lifecycle: init() discovers region / instance / ENI (IMDSv2, each overridable) and
creates the process's EC2 client, so a failover never pays for either. up() claims
with fencing epoch max(seen)+1, acts, and returns only once a read-back shows the VIP
pointing here (or fails, which demotes the node). check() re-reads while MASTER and
repairs drift; a newer claim by another node (higher epoch) makes it step down. down()
deliberately changes nothing in EC2: the next master steals the VIP, and unassigning
or disassociating would leave a window with no owner (an unassigned secondary IP can
even be handed to another instance by EC2). See docs/aws.md.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from providers.aws_api import ClientSettings, Ec2Api, SharedClient, make_client, shared_client
from providers.aws_errors import (
    AwsConfigError,
    AwsError,
    AwsFenceLost,
    AwsVerifyTimeout,
    ErrorKind,
    classify,
    error_code,
    iam_action,
)
from providers.aws_imds import (
    ImdsClient,
    ImdsError,
    Transport,
    interface_mac,
    urllib_transport,
)
from providers.aws_modes import (
    EKS_NO_MANAGE_TAG,
    EipMode,
    Fence,
    Identity,
    Mode,
    ModePlan,
    RouteMode,
    SecondaryIpMode,
)
from providers.aws_options import AwsOptions, parse_options
from providers.aws_retry import AsyncSleep, Backoff, Clock, converge
from providers.base import Provider, VipContext
from sidecar.config import Config, ProviderSpec, VipConfig
from sidecar.log import event

# a repeated identical action waits this long for the previous one to show in reads
ACT_INTERVAL_S = 3.0
PREFLIGHT_PROBE_S = 10.0


class AwsProvider(Provider):
    name = "aws"

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        self.opts: AwsOptions = parse_options(spec.options, spec.timeout)
        self.reassert_interval = self.opts.reassert_interval
        # seams for tests: time, sleeping, the EC2 client and the IMDS transport
        self.clock: Clock = time.monotonic
        self.sleep: AsyncSleep = asyncio.sleep
        self.client_factory = make_client
        self.imds_transport: Transport = urllib_transport
        self.poll_backoff = Backoff(initial=0.2, maximum=2.0)
        self.environ: dict[str, str] = dict(os.environ)
        self.ident: Identity | None = None
        self.mode: Mode | None = None
        self.api: Ec2Api | None = None
        self.imds: ImdsClient | None = None
        self.client: SharedClient | None = None
        self.epoch = 0  # the fencing epoch of our current claim
        self.drifts = 0
        self.warnings: list[str] = []
        self._ready_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------
    async def init(self) -> None:
        await self._ensure_ready(self.clock() + self.opts.verify_timeout)

    async def _ensure_ready(self, deadline: float) -> Mode:
        # init() failing at start-up (IMDS or EC2 briefly unreachable) must not leave the
        # node unable to ever take the VIP: up() and check() retry it
        async with self._ready_lock:
            if self.mode is not None:
                return self.mode
            ident, imds_warnings = await asyncio.to_thread(self._discover)
            settings = ClientSettings(
                region=ident.region,
                endpoint_url=self.opts.endpoint_url,
                retry_mode=self.opts.retry_mode,
                max_attempts=self.opts.max_attempts,
                connect_timeout=self.opts.connect_timeout,
                read_timeout=self.opts.read_timeout,
            )
            self.client = await asyncio.to_thread(shared_client, settings, self.client_factory)
            api = Ec2Api(
                self.client.client, clock=self.clock, sleep=self.sleep, vip_name=self.vip.name
            )
            if ident.eni_id == "":
                await self._eni_by_mac(api, ident, deadline)
            await self._describe_own_eni(api, ident, deadline)
            mode = self._make_mode(api, ident)
            warnings = imds_warnings + await mode.validate(deadline)
            if self.client.credential_method == "iam-role":
                warnings.append(
                    "AWS credentials come from the instance role through IMDS (iam-role): "
                    "no IRSA/environment credentials were found, so the sidecar acts with the "
                    "node's role"
                )
            elif self.client.credential_method is None:
                warnings.append("no AWS credentials found (every EC2 call will fail)")
            for text in warnings:
                event(logging.WARNING, f"aws: {text}", vip=self.vip.name, event="aws_warning")
            self.warnings = warnings
            self.ident, self.api, self.mode = ident, api, mode
            event(
                logging.INFO,
                f"aws provider ready: mode {mode.name}, region {ident.region}, "
                f"instance {ident.instance_id}, ENI {ident.eni_id}",
                vip=self.vip.name,
                event="aws_ready",
                mode=mode.name,
                region=ident.region,
                instance_id=ident.instance_id,
                eni_id=ident.eni_id,
                subnet_id=ident.subnet_id,
                credentials=self.client.credential_method,
                sources=ident.sources,
            )
            return mode

    def _make_imds(self) -> ImdsClient:
        if self.imds is None:
            self.imds = ImdsClient(
                endpoint=self.opts.imds_endpoint,
                timeout=self.opts.imds_timeout,
                attempts=self.opts.imds_attempts,
                transport=self.imds_transport,
            )
        return self.imds

    def _discover(self) -> tuple[Identity, list[str]]:
        """Region, instance and ENI: options first, then IMDSv2, then the environment.

        Runs in a worker thread. eni_id "" means: find it by MAC through EC2."""
        o = self.opts
        sources: dict[str, str] = {}
        warnings: list[str] = []
        region = o.region
        if region:
            sources["region"] = "option"
        instance_id = o.instance_id
        eni_id = o.eni_id
        mac = o.mac
        info: dict[str, str | None] = {}
        env_region = self.environ.get("AWS_REGION") or self.environ.get("AWS_DEFAULT_REGION")
        imds_failed: ImdsError | None = None
        if o.needs_imds or (region is None and not env_region):
            imds = self._make_imds()
            try:
                if region is None:
                    region = imds.region()
                    sources["region"] = "imds"
                if instance_id is None:
                    instance_id = imds.instance_id()
                    sources["instance_id"] = "imds"
                if eni_id is None:
                    if mac is None:
                        mac = interface_mac(self.vip.interface)
                        sources["mac"] = f"interface {self.vip.interface}"
                    info = imds.interface(mac)
                    eni_id = info["interface-id"]
                    sources["eni_id"] = "imds"
            except ImdsError as exc:
                imds_failed = exc
        if region is None and env_region:
            # boto3 reads AWS_DEFAULT_REGION only; we also honour AWS_REGION (IRSA sets it)
            region = env_region
            sources["region"] = "environment"
        elif (
            region is not None
            and sources.get("region") == "imds"
            and env_region
            and env_region != region
        ):
            warnings.append(
                f"the environment says region {env_region} but this instance is in {region} "
                "(from IMDS); using the instance's region"
            )
        if region is None:
            raise AwsConfigError(
                "cannot determine the AWS region: set option region (IMDS "
                f"{'failed: ' + str(imds_failed) if imds_failed else 'unavailable'})"
            )
        if imds_failed is not None:
            warnings.append(
                f"IMDS discovery failed ({imds_failed})"
                + ("; finding the ENI by MAC through EC2 instead" if eni_id is None else "")
            )
        if eni_id is None:
            if mac is None:
                mac = interface_mac(self.vip.interface)
                sources["mac"] = f"interface {self.vip.interface}"
            eni_id = ""  # resolved by DescribeNetworkInterfaces(mac-address) after init
        ident = Identity(
            region=region, eni_id=eni_id, instance_id=instance_id, mac=mac, sources=sources
        )
        if info:
            ident.subnet_id = info.get("subnet-id")
            ident.vpc_id = info.get("vpc-id")
            ident.subnet_cidr = _network(info.get("subnet-ipv4-cidr-block"))
            cidrs = (info.get("vpc-ipv4-cidr-blocks") or "").split()
            ident.vpc_cidrs = tuple(n for n in map(_network, cidrs) if n is not None)
            first = (info.get("local-ipv4s") or "").split()
            if first:
                ident.private_ip = IPv4Address(first[0])
        if o.subnet_id:
            ident.subnet_id = o.subnet_id
            sources["subnet_id"] = "option"
        return ident, warnings

    async def _eni_by_mac(self, api: Ec2Api, ident: Identity, deadline: float) -> None:
        resp = await api.call(
            "DescribeNetworkInterfaces",
            deadline,
            f"find the ENI with MAC {ident.mac}",
            Filters=[{"Name": "mac-address", "Values": [str(ident.mac)]}],
        )
        found = resp.get("NetworkInterfaces", [])
        if len(found) != 1:
            raise AwsConfigError(
                f"no single ENI has MAC {ident.mac} (found {len(found)}); set option eni_id"
            )
        ident.eni_id = str(found[0]["NetworkInterfaceId"])
        ident.sources["eni_id"] = "describe(mac-address)"

    async def _describe_own_eni(self, api: Ec2Api, ident: Identity, deadline: float) -> None:
        resp = await api.call(
            "DescribeNetworkInterfaces",
            deadline,
            f"own ENI {ident.eni_id}",
            NetworkInterfaceIds=[ident.eni_id],
        )
        enis = resp.get("NetworkInterfaces", [])
        if not enis:
            raise AwsConfigError(f"ENI {ident.eni_id} not found in {ident.region}")
        eni = enis[0]
        ident.subnet_id = ident.subnet_id or eni.get("SubnetId")
        ident.vpc_id = ident.vpc_id or eni.get("VpcId")
        if ident.private_ip is None and eni.get("PrivateIpAddress"):
            ident.private_ip = IPv4Address(eni["PrivateIpAddress"])
        if ident.instance_id is None:
            ident.instance_id = (eni.get("Attachment") or {}).get("InstanceId")
            if ident.instance_id:
                ident.sources["instance_id"] = "describe"
        ident.source_dest_check = eni.get("SourceDestCheck")
        ident.eni_tags = {str(t.get("Key")): str(t.get("Value")) for t in eni.get("TagSet", [])}
        if ident.mac is None and eni.get("MacAddress"):
            ident.mac = str(eni["MacAddress"])

    def _make_mode(self, api: Ec2Api, ident: Identity) -> Mode:
        fence = Fence(
            self.opts.tag_prefix,
            self.vip.addr,
            holder=f"?/{ident.eni_id}",
            enabled=self.opts.fencing,
        )
        if self.opts.mode == "secondary-ip":
            return SecondaryIpMode(api, ident, self.vip.addr, fence, self._imds_view(ident))
        if self.opts.mode == "eip":
            return EipMode(
                api,
                ident,
                self.vip.addr,
                fence,
                self.opts.allocation_id,
                self.opts.public_ip,
                self.opts.private_ip,
            )
        return RouteMode(api, ident, self.vip.addr, fence, self.opts.route_table_ids)

    def _imds_view(self, ident: Identity) -> Callable[[], list[str] | None] | None:
        """IMDS local-ipv4s of our ENI, when IMDS is in use (None: do not check)."""
        imds, mac = self.imds, ident.mac
        if not self.opts.verify_imds or imds is None or mac is None:
            return None
        if imds.stats.last_token_put_s is None:
            return None  # IMDS did not work at start-up: do not make the move depend on it

        def read() -> list[str] | None:
            try:
                return imds.get(imds.mac_path(mac, "local-ipv4s")).split()
            except ImdsError as exc:
                # an IMDS hiccup must not fail a move that EC2 confirms
                event(
                    logging.WARNING,
                    f"aws: IMDS local-ipv4s unreadable ({exc}); relying on EC2 alone",
                    vip=self.vip.name,
                    event="aws_imds_skip",
                )
                return None

        return read

    # -- transitions ---------------------------------------------------------------------
    async def up(self, ctx: VipContext) -> None:
        deadline = self.clock() + self.opts.verify_timeout
        mode = await self._ensure_ready(deadline)
        self._set_holder(mode, ctx)
        obs = await mode.observe(deadline)
        seen = mode.plan(obs, None)
        self.epoch = max(seen.seen_epoch, self.epoch) + 1
        previous = seen.owners
        await self._claim(mode, mode.plan(obs, self.epoch), deadline, ctx, "takeover", previous)

    async def down(self, ctx: VipContext) -> None:
        # make-before-break: the next master's up() moves the VIP; see the module docstring
        event(
            logging.INFO,
            "aws: leaving the EC2 mapping in place for the next master to take over",
            vip=self.vip.name,
            event="aws_release",
            epoch=self.epoch,
        )

    async def check(self, ctx: VipContext) -> bool:
        deadline = self.clock() + self.opts.verify_timeout
        mode = await self._ensure_ready(deadline)
        self._set_holder(mode, ctx)
        obs = await mode.observe(deadline)
        plan = mode.plan(obs, self.epoch)
        self._raise_if_fenced(plan)
        if plan.ok:
            return False
        self.drifts += 1
        event(
            logging.WARNING,
            f"aws: drift while MASTER: {plan.summary}; re-asserting",
            vip=self.vip.name,
            event="aws_drift",
            step=plan.step,
            drifts=self.drifts,
        )
        self.epoch = max(plan.seen_epoch, self.epoch) + 1
        await self._claim(mode, mode.plan(obs, self.epoch), deadline, ctx, "reassert", plan.owners)
        return True

    def _set_holder(self, mode: Mode, ctx: VipContext) -> None:
        assert self.ident is not None
        mode.fence = replace(mode.fence, holder=f"{ctx.node_name}/{self.ident.eni_id}")

    def _raise_if_fenced(self, plan: ModePlan) -> None:
        if plan.fence_lost:
            raise AwsFenceLost(
                f"{plan.seen_holder} claimed {self.vip.addr} with fencing epoch "
                f"{plan.seen_epoch} > ours ({self.epoch}): a newer master exists; stepping down"
            )

    async def _claim(
        self,
        mode: Mode,
        first: ModePlan,
        deadline: float,
        ctx: VipContext,
        why: str,
        previous: list[str],
    ) -> None:
        pending = [first]
        epoch = self.epoch

        async def read() -> ModePlan:
            plan = pending.pop() if pending else await mode.read(deadline, epoch)
            self._raise_if_fenced(plan)
            return plan

        async def act(plan: ModePlan) -> None:
            await mode.act(plan, deadline, epoch)

        result = await converge(
            read,
            act,
            deadline=deadline,
            clock=self.clock,
            sleep=self.sleep,
            backoff=self.poll_backoff,
            act_interval=ACT_INTERVAL_S,
        )
        if not result.ok:
            raise AwsVerifyTimeout(
                f"{mode.name}: EC2 accepted the calls but does not show {self.vip.addr} "
                f"pointing at {mode.describe_target()} after {result.effective_s:.1f}s "
                f"({result.acts} actions, {result.reads} reads): {result.plan.summary}"
            )
        api_s = result.api_s
        event(
            logging.INFO,
            f"aws: {self.vip.addr} points at {mode.describe_target()} ({mode.name}, {why}, "
            f"epoch {epoch}) after {result.effective_s:.3f}s",
            vip=self.vip.name,
            event="aws_claimed",
            mode=mode.name,
            why=why,
            epoch=epoch,
            local_epoch=ctx.epoch,
            previous=previous,
            target=mode.describe_target(),
            actions=result.acts,
            reads=result.reads,
            api_s=None if api_s is None else round(api_s, 6),
            effective_s=round(result.effective_s, 6),
        )

    # -- `vip-sidecar check --provider aws` ----------------------------------------------
    def status(self) -> dict[str, Any]:
        """Counters for /status and the vip_sidecar_provider_value metric."""
        out: dict[str, Any] = {
            "mode": self.opts.mode,
            "epoch": self.epoch,
            "drifts": self.drifts,
            "eni_id": self.ident.eni_id if self.ident is not None else None,
        }
        if self.api is not None:
            stats = self.api.stats
            out["calls"] = sum(stats.calls.values())
            out["botocore_retries"] = sum(stats.botocore_retries.values())
            out["provider_retries"] = sum(stats.loop_retries.values())
            out["errors"] = sum(stats.errors.values())
            out["errors_by_code"] = dict(stats.errors)
        return out

    async def preflight(self) -> list[tuple[bool, str]]:
        deadline = self.clock() + PREFLIGHT_PROBE_S
        mode = await self._ensure_ready(deadline)
        assert self.ident is not None and self.api is not None and self.client is not None
        ident = self.ident
        out: list[tuple[bool, str]] = []
        out.append((True, f"region {ident.region} ({ident.sources.get('region', '?')})"))
        out.append(
            (
                True,
                f"instance {ident.instance_id or 'unknown'}, ENI {ident.eni_id} "
                f"(MAC {ident.mac or '?'}, subnet {ident.subnet_id}, "
                f"{ident.sources.get('eni_id', 'option')})",
            )
        )
        if self.imds is not None:
            put_s = self.imds.stats.last_token_put_s
            if put_s is None:
                out.append(
                    (
                        True,
                        f"warning: IMDSv2 at {self.opts.imds_endpoint} gave no token; "
                        "identity came from options and EC2 instead",
                    )
                )
            else:
                out.append(
                    (
                        True,
                        f"IMDSv2 at {self.opts.imds_endpoint}: token PUT answered "
                        f"in {put_s * 1000:.0f} ms (hop limit sufficient)",
                    )
                )
        else:
            out.append((True, "IMDS not used (eni_id and region configured)"))
        method = self.client.credential_method
        out.append((method is not None, f"credentials: {method or 'none found'}"))
        for text in self.warnings:
            out.append((True, f"warning: {text}"))
        if (
            mode.name == "secondary-ip"
            and self.environ.get("KUBERNETES_SERVICE_HOST")
            and ident.eni_tags.get(EKS_NO_MANAGE_TAG) != "true"
        ):
            out.append(
                (
                    True,
                    f"warning: {ident.eni_id} lacks the tag {EKS_NO_MANAGE_TAG}=true: "
                    "on EKS the VPC CNI may hand the VIP to a pod (docs/aws.md)",
                )
            )
        out.extend(await self._probe_permissions(mode, deadline))
        try:
            plan = mode.plan(await mode.observe(deadline), None)
            out.append((True, f"current state: {plan.summary}"))
        except AwsError as exc:
            out.append((False, f"cannot read the current state: {exc}"))
        return out

    async def _probe_permissions(self, mode: Mode, deadline: float) -> list[tuple[bool, str]]:
        assert self.ident is not None
        eni = self.ident.eni_id
        probes: list[tuple[str, dict[str, Any]]] = []
        unprobed: list[str] = []
        if isinstance(mode, SecondaryIpMode):
            probes.append(("DescribeNetworkInterfaces", {"NetworkInterfaceIds": [eni]}))
            unprobed += ["AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"]
            tag_resource = eni
        elif isinstance(mode, EipMode):
            assert mode.allocation_id is not None
            probes.append(("DescribeAddresses", {"AllocationIds": [mode.allocation_id]}))
            probes.append(
                (
                    "AssociateAddress",
                    {
                        "AllocationId": mode.allocation_id,
                        "NetworkInterfaceId": eni,
                        "PrivateIpAddress": mode.target_private_ip,
                        "AllowReassociation": True,
                    },
                )
            )
            tag_resource = mode.allocation_id
        else:
            assert isinstance(mode, RouteMode)
            probes.append(("DescribeRouteTables", {"RouteTableIds": list(mode.tables)}))
            tables = await mode.observe(deadline)
            for table_id in mode.tables:
                route = next(
                    (
                        r
                        for r in tables[table_id].get("Routes", [])
                        if r.get("DestinationCidrBlock") == mode.destination
                    ),
                    None,
                )
                if route is not None and route.get("NetworkInterfaceId"):
                    # the current target: harmless even where DryRun is ignored (moto)
                    probes.append(
                        (
                            "ReplaceRoute",
                            {
                                "RouteTableId": table_id,
                                "DestinationCidrBlock": mode.destination,
                                "NetworkInterfaceId": route["NetworkInterfaceId"],
                            },
                        )
                    )
                elif self.opts.endpoint_url is None:
                    probes.append(
                        (
                            "CreateRoute",
                            {
                                "RouteTableId": table_id,
                                "DestinationCidrBlock": mode.destination,
                                "NetworkInterfaceId": eni,
                            },
                        )
                    )
                else:
                    unprobed.append(
                        f"CreateRoute on {table_id} (custom endpoint: emulators "
                        "ignore DryRun on routes and would create it)"
                    )
            tag_resource = mode.tables[0]
        if self.opts.fencing:
            # the tags as they are now would be harmless, but DryRun is honoured here anyway
            probes.append(("CreateTags", {"Resources": [tag_resource], "Tags": mode.fence.tags(0)}))
        out: list[tuple[bool, str]] = []
        for op, params in probes:
            out.append(await self._dry_run(op, params, deadline))
        for what in unprobed:
            out.append(
                (
                    True,
                    f"permission ec2:{what.split()[0]} not probed: "
                    f"{'no DryRun in this API' if ' ' not in what else what}",
                )
            )
        return out

    async def _dry_run(self, op: str, params: dict[str, Any], deadline: float) -> tuple[bool, str]:
        assert self.api is not None
        try:
            await self.api.call(op, deadline, "preflight", DryRun=True, **params)
        except AwsError as exc:
            cause = exc.__cause__ or exc
            code = error_code(cause)
            if code == "DryRunOperation":
                return True, f"permission {iam_action(op)}: allowed (DryRun)"
            if classify(cause) is ErrorKind.DENIED:
                return False, f"permission {iam_action(op)}: DENIED ({code}) - add it to the policy"
            return False, f"permission {iam_action(op)}: probe failed: {exc}"
        return True, f"permission {iam_action(op)}: allowed (endpoint ignored DryRun)"


def _network(text: str | None) -> IPv4Network | None:
    if not text:
        return None
    try:
        return IPv4Network(text.strip(), strict=False)
    except ValueError:
        return None


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Provider:
    return AwsProvider(spec, vip, config)
