"""`vip-sidecar check`: validate config, initialise providers, run their preflights."""

from __future__ import annotations

import inspect
from typing import Any

from providers.base import Provider
from sidecar import netif
from sidecar.config import Config


async def run_checks(config: Config, providers: dict[str, list[Provider]], only: str | None) -> int:
    failed = 0
    for vip in config.vips:
        print(f"[{vip.name}] vhid {vip.vhid} addr {vip.addr_text} on {vip.interface}")
        link = netif.link_state(vip.interface)
        mark = "ok" if link.carrier else "FAIL"
        failed += mark != "ok"
        print(
            f"  {mark:4} interface {vip.interface}: exists={link.exists} up={link.up} "
            f"carrier={link.running}"
        )
        for p in providers.get(vip.name, []):
            if only and p.name != only:
                continue
            preflight = getattr(p, "preflight", None)
            try:
                await p.init()
                lines: list[tuple[bool, str]] = [(True, "initialised")]
                if preflight is not None:
                    result: Any = preflight()
                    if inspect.isawaitable(result):
                        result = await result
                    lines = list(result)
            except Exception as exc:
                lines = [(False, f"{type(exc).__name__}: {exc}")]
            for ok, text in lines:
                failed += not ok
                print(f"  {'ok' if ok else 'FAIL':4} {p.name}: {text}")
            await p.close()
    return 1 if failed else 0
