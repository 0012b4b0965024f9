"""`vip-sidecar check` for the kubernetes provider: read-only and dry-run calls."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from vip_sidecar.providers.base import Preflight
from vip_sidecar.providers.kubernetes.api import KubeApiError, rbac_triples
from vip_sidecar.providers.kubernetes.lease import LeaseRecord, format_time

if TYPE_CHECKING:
    from vip_sidecar.providers.kubernetes.provider import KubernetesProvider


async def preflight(p: KubernetesProvider) -> Preflight:
    """Read-only and dry-run calls: proves connectivity and every RBAC verb without
    changing anything."""
    lines: list[tuple[bool, str]] = []
    try:
        api = await p.ensure_api()
    except Exception as exc:
        return [(False, f"client configuration: {type(exc).__name__}: {exc}")]
    host = api.api_client.configuration.host
    lines.append((True, f"{p.source} -> {host}; identity {p.opts.identity}"))
    lines.append(
        (
            True,
            f"lease {p.holder.lease_ref}, duration {p.opts.lease_duration}s, renew every "
            f"{p.opts.renew_interval:g}s, apiserver_outage="
            f"{p.opts.apiserver_outage.value}",
        )
    )

    async def probe(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        try:
            result = await call()
        except KubeApiError as exc:
            lines.append((False, f"{what}: {exc}"))
            return None
        lines.append((True, what))
        return result if result is not None else True

    record: LeaseRecord | None = None
    try:
        record = await p.holder.read(api)
        if record is None:
            lines.append((True, "get lease: not created yet"))
        else:
            holder = record.holder or "nobody"
            lines.append(
                (
                    True,
                    f"get lease: held by {holder}, leaseTransitions={record.transitions}",
                )
            )
    except KubeApiError as exc:
        lines.append((False, f"get lease: {exc}"))
    probe_body = p.holder.claim_body(record)
    if record is None:
        await probe("create lease (dry run)", lambda: api.create_lease(probe_body, True))
    else:
        await probe(
            "update lease (dry run)",
            lambda: api.update_lease(p.opts.lease_name, probe_body, True),
        )
    if p.opts.pod_name:
        pod = p.opts.pod_name
        labels: dict[str, str | None] = {p.opts.label_key: "backup"}
        await probe(f"get pod {pod}", lambda: api.get_pod(pod))
        if p.opts.label_pod:
            await probe(
                f"patch pod {pod} (dry run)", lambda: api.patch_pod_labels(pod, labels, True)
            )
    else:
        lines.append((True, "no POD_NAME: no pod label; events go to the Lease"))
    if p.opts.label_node and p.opts.node_name:
        node = p.opts.node_name
        node_labels: dict[str, str | None] = {p.opts.label_key: "backup"}
        await probe(f"get node {node}", lambda: api.get_node(node))
        await probe(
            f"patch node {node} (dry run)",
            lambda: api.patch_node_labels(node, node_labels, True),
        )
    if p.opts.events:
        now = format_time(p.wall())
        ev = {
            "metadata": {"name": f"{p.opts.lease_name}.preflight"},
            "involvedObject": {
                "kind": "Lease",
                "name": p.opts.lease_name,
                "namespace": p.holder.namespace,
            },
            "reason": "Preflight",
            "message": "vip-sidecar check",
            "type": "Normal",
            "firstTimestamp": now,
            "lastTimestamp": now,
        }
        await probe("create event (dry run)", lambda: api.create_event(ev, True))
    lines.append(
        (
            True,
            "RBAC needed: "
            + ", ".join(sorted(f"{g or 'core'}/{r}:{v}" for g, r, v in rbac_triples(p.opts.calls))),
        )
    )
    return lines
