"""`vip-sidecar check` for the AWS provider: identity, credentials, IAM permissions
(each mode names its calls, probed with DryRun) and the current state. Changes nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vip_sidecar.providers.aws.errors import AwsError, Cause, classify, error_code, iam_action
from vip_sidecar.providers.aws.modes import TAG_BUDGET, Mode
from vip_sidecar.providers.base import Preflight

if TYPE_CHECKING:
    from vip_sidecar.providers.aws.provider import AwsProvider

EKS_NO_MANAGE_TAG = "node.k8s.amazonaws.com/no_manage"
PREFLIGHT_PROBE_S = 10.0


async def preflight(p: AwsProvider) -> Preflight:
    """Identity, credentials, IAM permissions as dry runs, and the current state."""
    deadline = p.clock() + PREFLIGHT_PROBE_S
    mode = await p._ensure_ready(deadline)
    assert p.ident is not None and p.api is not None and p.client is not None
    ident = p.ident
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
    if p.imds is not None:
        put_s = p.imds.stats.last_token_put_s
        if put_s is None:
            out.append(
                (
                    True,
                    f"warning: IMDSv2 at {p.opts.imds_endpoint} gave no token; "
                    "identity came from options and EC2 instead",
                )
            )
        else:
            out.append(
                (
                    True,
                    f"IMDSv2 at {p.opts.imds_endpoint}: token PUT answered "
                    f"in {put_s * 1000:.0f} ms (hop limit sufficient)",
                )
            )
    else:
        out.append((True, "IMDS not used (eni_id and region configured)"))
    method = p.client.credential_method
    out.append((method is not None, f"credentials: {method or 'none found'}"))
    for text in p.warnings:
        out.append((True, f"warning: {text}"))
    if (
        mode.name == "secondary-ip"
        and p.environ.get("KUBERNETES_SERVICE_HOST")
        and ident.eni_tags.get(EKS_NO_MANAGE_TAG) != "true"
    ):
        out.append(
            (
                True,
                f"warning: {ident.eni_id} lacks the tag {EKS_NO_MANAGE_TAG}=true: "
                "on EKS the VPC CNI may hand the VIP to a pod (docs/aws.md)",
            )
        )
    out.extend(await _probe_permissions(p, mode, deadline))
    if p.opts.fencing:
        out.extend(await _tag_budget(mode, deadline))
    try:
        plan = mode.plan(await mode.observe(deadline), None)
        out.append((True, f"current state: {plan.summary}"))
    except AwsError as exc:
        out.append((False, f"cannot read the current state: {exc}"))
    return out


async def _probe_permissions(p: AwsProvider, mode: Mode, deadline: float) -> Preflight:
    probes = await mode.permission_probes(deadline, p.opts.endpoint_url is None)
    if p.opts.fencing:
        # the tags as they are now would be harmless, but DryRun is honoured here anyway
        tags = {"Resources": [probes.tag_resource], "Tags": mode.fence.tags(0)}
        probes.calls.append(("CreateTags", tags))
    out: list[tuple[bool, str]] = []
    for op, params in probes.calls:
        out.append(await _dry_run(p, op, params, deadline))
    for what in probes.unprobed:
        out.append(
            (
                True,
                f"permission ec2:{what.split()[0]} not probed: "
                f"{'no DryRun in this API' if ' ' not in what else what}",
            )
        )
    return out


async def _tag_budget(mode: Mode, deadline: float) -> Preflight:
    """EC2 allows 50 tags per resource; each VIP needs one on every resource it moves."""
    out: list[tuple[bool, str]] = []
    try:
        sets = await mode.tag_sets(deadline)
    except AwsError as exc:
        return [(False, f"tag budget: cannot read the tags: {exc}")]
    for resource, tags in sets.items():
        needed = mode.fence.budget_needed(tags)
        text = f"tag budget: {resource} carries {needed} of {TAG_BUDGET} tags with the fencing tag"
        if needed > TAG_BUDGET:
            text += " - remove unused tags, or the claim fails with TagLimitExceeded"
        out.append((needed <= TAG_BUDGET, text))
    return out


async def _dry_run(
    p: AwsProvider, op: str, params: dict[str, Any], deadline: float
) -> tuple[bool, str]:
    assert p.api is not None
    try:
        await p.api.call(op, deadline, "preflight", DryRun=True, **params)
    except AwsError as exc:
        cause = exc.__cause__ or exc
        code = error_code(cause)
        if code == "DryRunOperation":
            return True, f"permission {iam_action(op)}: allowed (DryRun)"
        if classify(cause) is Cause.DENIED:
            return False, f"permission {iam_action(op)}: DENIED ({code}) - add it to the policy"
        return False, f"permission {iam_action(op)}: probe failed: {exc}"
    return True, f"permission {iam_action(op)}: allowed (endpoint ignored DryRun)"
