"""`vip-sidecar check`: validate config, initialise providers, run their preflights."""

from __future__ import annotations

import socket

from vip_sidecar import inet, netif
from vip_sidecar.config import Config, ConfigError, VipConfig
from vip_sidecar.providers.base import Provider


def host_problem(vip: VipConfig) -> tuple[str, str] | None:
    """(field, message) when this host cannot speak for the VIP at all: the interface
    is missing, or srcip is not one of its addresses (ucarp exits for both; advertising
    from an address the host does not own would be a lie the peers believe)."""
    if not netif.link_state(vip.interface).exists:
        present = ", ".join(sorted(name for _, name in socket.if_nameindex()))
        return "interface", f"no interface named {vip.interface} (present: {present})"
    addresses = netif.addresses(vip.interface)
    if vip.srcip not in addresses:
        same = sorted(str(a) for a in addresses if a.version == vip.srcip.version)
        have = ", ".join(same) or f"no usable {inet.family(vip.srcip)} address"
        return "srcip", f"{vip.srcip} is not an address of {vip.interface} (it has {have})"
    return None


def adverts_to(vip: VipConfig) -> str:
    if vip.peers:
        return "peers " + ", ".join(str(p) for p in vip.peers)
    return "broadcast" if vip.nomcast else f"group {vip.mcast}"


def check_host(config: Config) -> None:
    """`run` refuses to start on the first host problem: one ConfigError naming the field."""
    for i, vip in enumerate(config.vips):
        problem = host_problem(vip)
        if problem is not None:
            where = f"vips[{i}]." if len(config.vips) > 1 else ""
            raise ConfigError(where + problem[0], problem[1])


async def run_checks(config: Config, providers: dict[str, list[Provider]], only: str | None) -> int:
    failed = 0
    for vip in config.vips:
        # the family and where adverts go: what an import (--from-interfaces, rc.conf)
        # made of the source is visible before anything runs
        print(
            f"[{vip.name}] vhid {vip.vhid} {vip.family} addr {vip.addr_text} on "
            f"{vip.interface}, adverts from {vip.srcip} to {adverts_to(vip)}"
        )
        link = netif.link_state(vip.interface)
        mark = "ok" if link.carrier else "FAIL"
        failed += mark != "ok"
        print(
            f"  {mark:4} interface {vip.interface}: exists={link.exists} up={link.up} "
            f"carrier={link.running}"
        )
        problem = host_problem(vip)
        if link.exists:
            failed += problem is not None
            text = problem[1] if problem else f"{vip.srcip} is an address of {vip.interface}"
            print(f"  {'FAIL' if problem else 'ok':4} srcip: {text}")
        for p in providers.get(vip.name, []):
            if only and p.name != only:
                continue
            try:
                await p.init()
                lines = await p.preflight()
            except Exception as exc:
                lines = [(False, f"{type(exc).__name__}: {exc}")]
            for ok, text in lines:
                failed += not ok
                print(f"  {'ok' if ok else 'FAIL':4} {p.name}: {text}")
            await p.close()
    return 1 if failed else 0
