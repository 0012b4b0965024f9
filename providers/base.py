"""The provider contract and the ordered, timeout-bounded pipeline of one VIP.

A provider is what happens to the world when a node becomes MASTER or BACKUP: an IP
alias, a cloud API move, a Kubernetes Lease, a script. Providers are configured as an
ordered list per VIP. `up` runs in list order, `down` in reverse; each call has its own
timeout. The pipeline never raises: failures come back as values so the runtime can
demote the node instead of crashing, and the advertisement loop keeps running because
everything here is awaited in a separate task.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from sidecar.config import Config, ProviderSpec, VipConfig
from sidecar.log import event


class ProviderConfigError(ValueError):
    """Bad provider options; raised at start-up, before any transition."""


class Veto(Exception):
    """Raised by pre_master() to refuse a promotion, with the reason as message."""


@dataclass
class VipContext:
    """What a provider may know about the VIP and the transition it acts on."""

    vip: VipConfig
    node_name: str
    epoch: int = 0  # increments on every promotion; providers stamp it for fencing
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def addr(self) -> IPv4Address:
        return self.vip.addr

    @property
    def interface(self) -> str:
        return self.vip.interface


class Provider:
    """Base class; override what the provider needs. All hooks are coroutines."""

    name: str = "provider"
    #: seconds between check() calls while MASTER (None: never)
    reassert_interval: float | None = None
    #: True if pre_master() can refuse promotions (the runtime then confirms them)
    can_veto: bool = False
    #: True if this provider sends its own gratuitous ARPs (runtime GARPs stay quiet)
    announces: bool = False

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        self.spec = spec
        self.name = spec.label
        self.vip = vip
        self.config = config
        self.timeout = spec.timeout

    async def init(self) -> None:
        """Connect clients, discover identity; failure makes /readyz report not ready."""

    async def pre_master(self, ctx: VipContext) -> None:
        """Raise Veto(reason) to keep this node BACKUP (e.g. a fence it cannot take)."""

    async def up(self, ctx: VipContext) -> None:
        """Make this node the owner of the VIP. Must be idempotent."""

    async def down(self, ctx: VipContext) -> None:
        """Release the VIP on this node. Must be idempotent."""

    def announce(self) -> None:
        """Providers with `announces = True`: send a gratuitous ARP now (a worse master
        was heard, or ucarp's delayed GARP is due). Must not block."""

    async def bow_out(self, ctx: VipContext) -> None:
        """Graceful exit of a MASTER, right after the bow-out advert and before the
        successor is heard: give up what the successor needs in order to claim (a lease),
        but keep serving (the address stays until down())."""

    async def check(self, ctx: VipContext) -> bool:
        """While MASTER: verify and repair. Return True if something had to be repaired;
        raise if the VIP cannot be held (the node then steps down)."""
        return False

    async def close(self) -> None:
        """Release clients at exit."""

    def status(self) -> dict[str, Any]:
        """Provider-specific facts for /status; numeric values also become metrics
        (vip_sidecar_provider_value{provider,key})."""
        return {}


@dataclass
class ProviderResult:
    action: str
    ok: bool
    duration_s: float
    at: float
    error: str | None = None


@dataclass(frozen=True)
class Failure:
    provider: str
    action: str
    error: str
    timed_out: bool = False


Observer = Callable[[str, ProviderResult], None]


def load_provider(spec: ProviderSpec, vip: VipConfig, config: Config) -> Provider:
    """Import only the providers that are configured (boto3 and the kubernetes client
    are heavy; a node that only needs an alias never loads them)."""
    module_name = spec.name if "." in spec.name else f"providers.{spec.name}"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProviderConfigError(
            f"provider {spec.name!r}: cannot import {module_name}: {exc}"
        ) from None
    factory = getattr(module, "create", None)
    if factory is None:
        raise ProviderConfigError(f"provider {spec.name!r}: {module_name} has no create()")
    provider = factory(spec, vip, config)
    if not isinstance(provider, Provider):
        raise ProviderConfigError(f"provider {spec.name!r}: create() did not return a Provider")
    return provider


class Pipeline:
    def __init__(self, providers: list[Provider], observer: Observer | None = None) -> None:
        self.providers = providers
        self.results: dict[str, ProviderResult] = {}
        self._observer = observer

    @property
    def can_veto(self) -> bool:
        return any(p.can_veto for p in self.providers)

    @property
    def announces(self) -> bool:
        return any(p.announces for p in self.providers)

    async def init(self) -> list[Failure]:
        return [f for p in self.providers if (f := await self._call(p, "init", p.init)) is not None]

    async def pre_master(self, ctx: VipContext) -> str | None:
        """None if every provider agrees to the promotion, else the first refusal."""
        for p in self.providers:
            if not p.can_veto:
                continue
            failure = await self._call(p, "pre_master", functools.partial(p.pre_master, ctx))
            if failure is not None:
                return f"{p.name}: {failure.error}"
        return None

    async def up(self, ctx: VipContext) -> Failure | None:
        """Run up() in order; stop at the first failure and undo what already ran."""
        for i, p in enumerate(self.providers):
            failure = await self._call(p, "up", functools.partial(p.up, ctx))
            if failure is not None:
                await self._down_each(reversed(self.providers[: i + 1]), ctx)
                return failure
        return None

    async def down(self, ctx: VipContext) -> list[Failure]:
        return await self._down_each(reversed(self.providers), ctx)

    async def bow_out(self, ctx: VipContext) -> list[Failure]:
        failures = []
        for p in reversed(self.providers):
            failure = await self._call(p, "bow_out", functools.partial(p.bow_out, ctx))
            if failure is not None:
                failures.append(failure)
        return failures

    async def check(self, ctx: VipContext, provider: Provider) -> Failure | None:
        return await self._call(provider, "check", functools.partial(provider.check, ctx))

    async def close(self) -> None:
        for p in self.providers:
            await self._call(p, "close", p.close)

    async def _down_each(self, providers: Any, ctx: VipContext) -> list[Failure]:
        failures = []
        for p in providers:
            failure = await self._call(p, "down", functools.partial(p.down, ctx))
            if failure is not None:
                failures.append(failure)
        return failures

    async def _call(
        self, p: Provider, action: str, fn: Callable[[], Awaitable[Any]]
    ) -> Failure | None:
        start = time.monotonic()
        failure: Failure | None = None
        try:
            await asyncio.wait_for(fn(), timeout=p.timeout)
        except TimeoutError:
            failure = Failure(p.name, action, f"timed out after {p.timeout:g}s", timed_out=True)
        except Veto as exc:
            failure = Failure(p.name, action, str(exc) or "promotion refused")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a provider bug must never take the daemon down
            failure = Failure(p.name, action, f"{type(exc).__name__}: {exc}")
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
                duration_s=round(duration, 6),
                event="provider_failure",
            )
        return failure
