"""ucarp-compatible up/down scripts.

Called exactly like ucarp: argv = [script, <interface>, <vip as written>, [xparam]],
no shell, no PATH lookup, environment inherited. Unlike ucarp the script runs in its
own task with a timeout, so a hanging script never stops advertisements; a script that
overruns is terminated (SIGTERM, then SIGKILL) and the exit status is logged.

ucarp ignores exit statuses; so do we by default. `fail_on_error: true` turns a
non-zero exit or a timeout into a provider failure (the node then demotes itself).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from typing import Any

from vip_sidecar import parsing
from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.log import event
from vip_sidecar.providers.base import Provider, ProviderConfigError, VipContext

KILL_GRACE_S = 2.0


class ScriptError(RuntimeError):
    pass


class ScriptProvider(Provider):
    name = "script"

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        bag = parsing.OptionBag("script", spec.options, ProviderConfigError)
        self.upscript: str | None = bag.take("upscript", parsing.text, vip.upscript)
        self.downscript: str | None = bag.take("downscript", parsing.text, vip.downscript)
        self.xparam: str | None = bag.take("xparam", str, vip.xparam)
        self.fail_on_error = bag.take("fail_on_error", parsing.boolean, False)
        # the script gets its own deadline; the pipeline's timeout only backs it up
        self.script_timeout = bag.take(
            "timeout_s",
            parsing.number(0.0, 86400.0, unit="seconds", lo_open=True),
            vip.script_timeout,
        )
        bag.finish()
        self.timeout = self.script_timeout + KILL_GRACE_S + 1.0

    def argv(self, script: str) -> list[str]:
        args = [script, self.vip.interface, self.vip.addr_text]
        if self.xparam is not None:
            args.append(self.xparam)
        return args

    async def up(self, ctx: VipContext) -> None:
        if self.upscript:
            await self.run(self.upscript, ctx)

    async def down(self, ctx: VipContext) -> None:
        if self.downscript:
            await self.run(self.downscript, ctx)

    async def run(self, script: str, ctx: VipContext) -> int | None:
        """Run one script; returns its exit status (None if it could not start)."""
        argv = self.argv(script)
        event(
            logging.WARNING,
            f"Spawning [{' '.join(argv)}]",
            vip=self.vip.name,
            event="script_spawn",
            argv=argv,
        )
        start = time.monotonic()
        try:
            # ucarp uses execl(): no PATH search, a bare name is relative to the cwd
            executable = script if "/" in script else os.path.join(".", script)
            proc = await asyncio.create_subprocess_exec(
                *argv,
                executable=executable,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            msg = f"Unable to exec {' '.join(argv)}: {exc.strerror}"
            event(logging.ERROR, msg, vip=self.vip.name, event="script_error")
            if self.fail_on_error:
                raise ScriptError(msg) from None
            return None
        try:
            status = await asyncio.wait_for(proc.wait(), timeout=self.script_timeout)
        except TimeoutError:
            await self._terminate(proc)
            msg = f"script {script} timed out after {self.script_timeout:g}s and was killed"
            event(logging.ERROR, msg, vip=self.vip.name, event="script_timeout", argv=argv)
            if self.fail_on_error:
                raise ScriptError(msg) from None
            return None
        except asyncio.CancelledError:
            await self._terminate(proc)
            raise
        level = logging.INFO if status == 0 else logging.WARNING
        event(
            level,
            f"script {script} exited with status {status}",
            vip=self.vip.name,
            event="script_exit",
            status=status,
            duration_s=round(time.monotonic() - start, 6),
        )
        if status != 0 and self.fail_on_error:
            raise ScriptError(f"{script} exited with status {status}")
        return status

    @staticmethod
    async def _terminate(proc: asyncio.subprocess.Process) -> None:
        # the script runs in its own session: signal the whole group so its children go too
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                await asyncio.wait_for(proc.wait(), timeout=KILL_GRACE_S)
                return
            except TimeoutError:
                continue


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Any:
    return ScriptProvider(spec, vip, config)
