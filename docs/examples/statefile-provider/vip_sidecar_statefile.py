"""Example third-party provider: writes this node's role for a VIP into a file.

    providers:
      - name: statefile
        path: /run/vip/web.state

up() writes `MASTER <epoch>`, down() writes `BACKUP`; while MASTER, check() puts the
line back if something else changed the file (and says it repaired it). Writes are
atomic (a temporary file renamed over the old one), so a reader never sees half a line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vip_sidecar import parsing
from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.providers.base import Preflight, Provider, ProviderConfigError, VipContext


class StateFileProvider(Provider):
    reassert_interval = 2.0  # check() while MASTER, every 2 s (the runtime jitters it)

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        # the shared option checker: typed values, one-line errors, unknown keys refused
        bag = parsing.OptionBag(spec.label, spec.options, ProviderConfigError)
        path = bag.take("path", parsing.text, "")
        bag.finish()
        if not path:
            raise ProviderConfigError(f"{spec.label}.path: required (where to write the role)")
        self.path = Path(path)
        self.writes = 0

    async def up(self, ctx: VipContext) -> None:
        self._write(f"MASTER {ctx.epoch}")

    async def down(self, ctx: VipContext) -> None:
        self._write("BACKUP")

    async def check(self, ctx: VipContext) -> bool:
        want = f"MASTER {ctx.epoch}"
        try:
            if self.path.read_text().strip() == want:
                return False
        except FileNotFoundError:
            pass
        self._write(want)
        return True

    async def preflight(self) -> Preflight:
        where = self.path.parent
        ok = os.access(where, os.W_OK)
        return [(ok, f"{where} is {'writable' if ok else 'NOT writable'}")]

    def status(self) -> dict[str, Any]:
        return {"path": str(self.path), "writes": self.writes}

    def _write(self, line: str) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(line + "\n")
        os.replace(tmp, self.path)
        self.writes += 1


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Provider:
    return StateFileProvider(spec, vip, config)
