"""The ordered, timeout-bounded provider calls of one VIP; failures come back as values.

`up` runs in list order, `down` in reverse; each call has its own timeout. The pipeline
never raises: a failure is a ProviderFailure carrying the error's kind (vip_sidecar.providers.base),
so the runtime can demote the node instead of crashing, and the advertisement loop keeps
running because everything here is awaited in a separate task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from vip_sidecar.log import event
from vip_sidecar.providers.base import ErrorKind, Provider, VipContext, error_kind


@dataclass
class ProviderResult:
    action: str
    ok: bool
    duration_s: float
    at: float
    error: str | None = None


@dataclass(frozen=True)
class ProviderFailure:
    provider: str
    action: str
    error: str
    kind: ErrorKind = ErrorKind.PERMANENT
    timed_out: bool = False


ResultObserver = Callable[[str, ProviderResult], None]


class Pipeline:
    def __init__(self, providers: list[Provider], observer: ResultObserver | None = None) -> None:
        self.providers = providers
        self.results: dict[str, ProviderResult] = {}
        self._observer = observer

    @property
    def can_veto(self) -> bool:
        return any(p.can_veto for p in self.providers)

    @property
    def announces(self) -> bool:
        return any(p.announces for p in self.providers)

    async def init(self) -> list[ProviderFailure]:
        return [f for p in self.providers if (f := await self.call(p, "init", p.init)) is not None]

    async def pre_master(self, ctx: VipContext) -> str | None:
        """None if every provider agrees to the promotion, else the first refusal."""
        for p in self.providers:
            if not p.can_veto:
                continue
            failure = await self.call(p, "pre_master", functools.partial(p.pre_master, ctx))
            if failure is not None:
                return f"{p.name}: {failure.error}"
        return None

    async def up(self, ctx: VipContext) -> ProviderFailure | None:
        """Run up() in order; stop at the first failure and undo what already ran."""
        for i, p in enumerate(self.providers):
            failure = await self.call(p, "up", functools.partial(p.up, ctx))
            if failure is not None:
                await self._down_each(reversed(self.providers[: i + 1]), ctx)
                return failure
        return None

    async def down(self, ctx: VipContext) -> list[ProviderFailure]:
        return await self._down_each(reversed(self.providers), ctx)

    async def down_before_init(self, ctx: VipContext) -> list[ProviderFailure]:
        """The start-up clean-up of the providers that can do it before init()."""
        return await self._down_each(
            (p for p in reversed(self.providers) if p.down_before_init), ctx
        )

    async def bow_out(self, ctx: VipContext) -> list[ProviderFailure]:
        failures = []
        for p in reversed(self.providers):
            failure = await self.call(p, "bow_out", functools.partial(p.bow_out, ctx))
            if failure is not None:
                failures.append(failure)
        return failures

    async def close(self) -> None:
        for p in self.providers:
            await self.call(p, "close", p.close)

    async def _down_each(
        self, providers: Iterable[Provider], ctx: VipContext
    ) -> list[ProviderFailure]:
        failures = []
        for p in providers:
            failure = await self.call(p, "down", functools.partial(p.down, ctx))
            if failure is not None:
                failures.append(failure)
        return failures

    async def call(
        self, p: Provider, action: str, fn: Callable[[], Awaitable[Any]]
    ) -> ProviderFailure | None:
        """One provider hook under its timeout; the result is recorded and observed."""
        start = time.monotonic()
        failure: ProviderFailure | None = None
        try:
            await asyncio.wait_for(fn(), timeout=p.timeout)
        except TimeoutError:
            error = f"timed out after {p.timeout:g}s"
            failure = ProviderFailure(p.name, action, error, ErrorKind.RETRYABLE, timed_out=True)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider bug must never take the daemon down
            kind = error_kind(exc)
            if kind is ErrorKind.VETO:
                text = str(exc) or "promotion refused"
            else:
                text = f"{type(exc).__name__}: {exc}"
            failure = ProviderFailure(p.name, action, text, kind)
        duration = time.monotonic() - start
        result = ProviderResult(
            action, failure is None, duration, time.time(), failure.error if failure else None
        )
        self.results[p.name] = result
        if self._observer is not None:
            self._observer(p.name, result)
        if failure is not None and action != "pre_master":
            event(
                logging.ERROR,
                f"provider {p.name} {action} failed: {failure.error}",
                vip=p.vip.name,
                provider=p.name,
                action=action,
                error=failure.error,
                kind=failure.kind.value,
                duration_s=round(duration, 6),
                event="provider_failure",
            )
        return failure
