"""Providers used only by tests to inject failures (loaded by dotted module path).

Behaviour is switched at run time through files, so a test can make a running daemon's
provider fail, hang or veto without restarting it. Every call is appended to `log`.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.providers.base import Provider, Veto, VipContext


class FaultyProvider(Provider):
    name = "faulty"
    can_veto = True

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        opts = spec.options
        self.fail_file = Path(str(opts.get("fail_file", "/nonexistent")))
        self.hang_file = Path(str(opts.get("hang_file", "/nonexistent")))
        self.veto_file = Path(str(opts.get("veto_file", "/nonexistent")))
        self.log = Path(str(opts.get("log", "/dev/null")))
        self.init_fail = bool(opts.get("init_fail", False))
        # a slow init (a kubernetes client's import, an API that is down)
        self.init_delay = float(opts.get("init_delay", 0))
        # block_file holds seconds: the next check() blocks the whole event loop that
        # long (a wedged daemon, from inside: SIGSTOP would stop every thread instead)
        self.block_file = Path(str(opts.get("block_file", "/nonexistent")))
        if "block_file" in opts:
            self.reassert_interval = 0.2

    def _record(self, what: str) -> None:
        with self.log.open("a") as fh:
            fh.write(f"{time.time():.6f} {what}\n")

    async def init(self) -> None:
        if self.init_delay:
            await asyncio.sleep(self.init_delay)
            self._record("init done")
        if self.init_fail:
            raise RuntimeError("injected init failure")

    async def pre_master(self, ctx: VipContext) -> None:
        self._record("pre_master")
        if self.veto_file.exists():
            raise Veto(self.veto_file.read_text().strip() or "test veto")

    async def up(self, ctx: VipContext) -> None:
        self._record("up")
        if self.hang_file.exists():
            await asyncio.sleep(3600)
        if self.fail_file.exists():
            raise RuntimeError("injected failure")

    async def down(self, ctx: VipContext) -> None:
        self._record("down")

    async def check(self, ctx: VipContext) -> bool:
        if self.block_file.exists():
            seconds = float(self.block_file.read_text() or 1)
            self.block_file.unlink()
            self._record(f"block {seconds}")
            time.sleep(seconds)  # deliberately synchronous: the loop stalls
            self._record("unblock")
        return False


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Any:
    return FaultyProvider(spec, vip, config)
