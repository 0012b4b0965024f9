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
from typing import Any

from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.log import event
from vip_sidecar.providers.aws import preflight as aws_preflight
from vip_sidecar.providers.aws.api import (
    ClientSettings,
    Ec2Api,
    SharedClient,
    make_client,
    shared_client,
)
from vip_sidecar.providers.aws.eip import EipMode
from vip_sidecar.providers.aws.errors import AwsFenceLost, AwsNotOwner, AwsVerifyTimeout
from vip_sidecar.providers.aws.identity import Identity, describe_own_eni, discover, eni_by_mac
from vip_sidecar.providers.aws.imds import ImdsClient, ImdsError, Transport, urllib_transport
from vip_sidecar.providers.aws.modes import Fence, Mode, ModePlan, bound_holder
from vip_sidecar.providers.aws.options import AwsOptions, parse_options
from vip_sidecar.providers.aws.retry import AsyncSleep, Backoff, Clock, converge
from vip_sidecar.providers.aws.route import RouteMode
from vip_sidecar.providers.aws.secondary import IPV4, IPV6, SecondaryIpMode
from vip_sidecar.providers.base import Preflight, Provider, ProviderConfigError, VipContext

# a repeated identical action waits this long for the previous one to show in reads
ACT_INTERVAL_S = 3.0


class AwsProvider(Provider):
    name = "aws"

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        self.opts: AwsOptions = parse_options(spec.options, spec.timeout)
        if self.opts.mode == "eip" and vip.addr.version == 6:
            raise ProviderConfigError(
                f"aws provider: mode eip cannot carry the IPv6 VIP {vip.addr} (Elastic IPs "
                "are IPv4 only); use mode secondary-ip or route for an IPv6 VIP"
            )
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
        self.transient_drifts = 0  # drift that a second read no longer showed
        self.ignored_checks = 0  # checks abandoned because the node stepped down
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
            ident, imds_warnings = await asyncio.to_thread(
                discover, self.opts, self.environ, self.vip.interface, self._make_imds
            )
            settings = ClientSettings(
                region=ident.region,
                endpoint_url=self.opts.endpoint_url,
                retry_mode=self.opts.retry_mode,
                max_attempts=self.opts.max_attempts,
                connect_timeout=self.opts.connect_timeout,
                read_timeout=self.opts.read_timeout,
                imds_endpoint=self.opts.imds_endpoint,
            )
            self.client = await asyncio.to_thread(shared_client, settings, self.client_factory)
            api = Ec2Api(
                self.client.client,
                clock=self.clock,
                sleep=self.sleep,
                vip_name=self.vip.name,
                attempt_s=settings.attempt_s,
                mutating_client=self.client.mutating,
            )
            if ident.eni_id == "":
                await eni_by_mac(api, ident, deadline)
            await describe_own_eni(api, ident, deadline)
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

    def _make_mode(self, api: Ec2Api, ident: Identity) -> Mode:
        fence = Fence(
            self.opts.tag_prefix,
            self.vip.addr,
            holder=bound_holder("?", ident.eni_id),
            enabled=self.opts.fencing,
        )
        if self.opts.mode == "secondary-ip":
            return SecondaryIpMode(
                api,
                ident,
                self.vip.addr,
                fence,
                self._imds_view(ident, (IPV6 if self.vip.addr.version == 6 else IPV4).imds_leaf),
                emulator_compat=self.opts.emulator_compat,
            )
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

    def _imds_view(self, ident: Identity, leaf: str) -> Callable[[], list[str] | None] | None:
        """IMDS local-ipv4s (ipv6s) of our ENI, when IMDS is in use (None: do not check)."""
        imds, mac = self.imds, ident.mac
        if not self.opts.verify_imds or imds is None or mac is None:
            return None
        if imds.stats.last_token_put_s is None:
            return None  # IMDS did not work at start-up: do not make the move depend on it

        def read() -> list[str] | None:
            try:
                found = imds.get_optional(imds.mac_path(mac, leaf))
                # IMDS answers 404 for ipv6s while the ENI has no IPv6 address
                return (found or "").split()
            except ImdsError as exc:
                # an IMDS hiccup must not fail a move that EC2 confirms
                event(
                    logging.WARNING,
                    f"aws: IMDS {leaf} unreadable ({exc}); relying on EC2 alone",
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
        try:
            return await self._check(ctx)
        except AwsNotOwner:
            # demoted while this check ran: its result no longer matters, and it issued
            # no mutating call after the demotion (Ec2Api refuses them)
            self.ignored_checks += 1
            return False

    async def _check(self, ctx: VipContext) -> bool:
        deadline = self.clock() + self.opts.verify_timeout
        mode = await self._ensure_ready(deadline)
        self._set_holder(mode, ctx)
        plan = await self._read_as_master(mode, ctx, deadline)
        if plan.ok:
            return False
        # a change must persist across two reads drift_confirm apart before we undo it:
        # a newer master's move can be visible before its claim (EC2 reads lag writes,
        # in no guaranteed order); by the second read the claim has usually caught up
        first = plan.summary
        await self.sleep(self.opts.drift_confirm)
        deadline = self.clock() + self.opts.verify_timeout
        obs = await mode.observe(deadline)
        self._guard(ctx)
        plan = mode.plan(obs, self.epoch)
        self._raise_if_fenced(plan)
        if plan.ok:
            self.transient_drifts += 1
            event(
                logging.INFO,
                f"aws: drift seen once ({first}) was gone {self.opts.drift_confirm:g}s later "
                "(a lagging read); nothing to repair",
                vip=self.vip.name,
                event="aws_drift_transient",
            )
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

    async def _read_as_master(self, mode: Mode, ctx: VipContext, deadline: float) -> ModePlan:
        plan = await mode.read(deadline, self.epoch)
        self._guard(ctx)
        self._raise_if_fenced(plan)
        return plan

    def _guard(self, ctx: VipContext) -> None:
        if not ctx.is_master():
            raise AwsNotOwner(f"{self.vip.addr}: no longer MASTER; check abandoned")

    def _set_holder(self, mode: Mode, ctx: VipContext) -> None:
        assert self.ident is not None and self.api is not None
        mode.fence = replace(mode.fence, holder=bound_holder(ctx.node_name, self.ident.eni_id))
        self.api.still_owner = ctx.is_master

    def _raise_if_fenced(self, plan: ModePlan) -> None:
        if plan.fence_lost:
            raise AwsFenceLost(
                f"{plan.seen_holder} claimed {self.vip.addr} with fencing epoch "
                f"{plan.seen_epoch} > ours ({self.epoch}), or the same epoch and a higher "
                "holder: a newer master exists; stepping down"
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
            self._guard(ctx)
            self._raise_if_fenced(plan)
            return plan

        async def act(plan: ModePlan) -> None:
            # no new move that could land after the deadline; the loop then reports what
            # EC2 shows instead
            if mode.api.can_mutate_by(deadline):
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

    # -- /status and `vip-sidecar check` -----------------------------------------------------
    async def preflight(self) -> Preflight:
        return await aws_preflight.preflight(self)

    def status(self) -> dict[str, Any]:
        """Counters for /status and the vip_sidecar_provider_value metric."""
        out: dict[str, Any] = {
            "mode": self.opts.mode,
            "epoch": self.epoch,
            "drifts": self.drifts,
            "transient_drifts": self.transient_drifts,
            "ignored_checks": self.ignored_checks,
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


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Provider:
    return AwsProvider(spec, vip, config)
