"""What /status (and `vip-sidecar status`) shows of one VIP, read at request time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vip_sidecar.providers.base import Provider

if TYPE_CHECKING:
    from vip_sidecar.instance import VipInstance


def vip_status(inst: VipInstance) -> dict[str, Any]:
    e, cfg, rec = inst.election, inst.cfg, inst.reconciler
    seen = inst.speaker.master_seen
    return {
        "name": cfg.name,
        "vhid": cfg.vhid,
        "interface": cfg.interface,
        "addr": cfg.addr_text,
        "family": cfg.family,
        "srcip": str(cfg.srcip),
        "group": str(cfg.mcast),
        "state": e.state.name,
        "applied": rec.applied.name if rec.applied else None,
        "since": inst.since,
        "last_reason": inst.last_reason,
        "advbase": cfg.advbase,
        "advskew": e.advskew,
        "demotion": e.demotion,
        "maintenance": e.maintenance,
        "hold_down_s": max(0.0, round(e.hold_until - inst.clock(), 3)),
        "master_seen": None if seen is None else vars(seen),
        "mode": "unicast" if cfg.peers else ("broadcast" if cfg.nomcast else "multicast"),
        "peers": [str(p) for p in cfg.peers],
        "counters": inst.stats.as_dict(),
        "providers": {p.name: _provider_status(inst, p) for p in rec.pipeline.providers},
        "last_failover": None if rec.timeline is None else rec.timeline.as_dict(),
        "last_failure": rec.last_failure,
        "ready": rec.ready,
    }


def _provider_status(inst: VipInstance, p: Provider) -> dict[str, Any]:
    result = inst.reconciler.pipeline.results.get(p.name)
    return {
        "last": vars(result) if result is not None else None,
        "details": provider_details(p),
    }


def provider_details(p: Provider) -> dict[str, Any]:
    """A provider's status(); a bug in it must not break /status or a scrape."""
    try:
        return p.status()
    except Exception as exc:
        return {"error": repr(exc)}
