"""The provider contract: hooks, what a provider may know, and the errors it raises.

A provider is what happens to the world when a node becomes MASTER or BACKUP: an IP
alias, a cloud API move, a Kubernetes Lease, a script. Providers are configured as an
ordered list per VIP; the daemon (vip_sidecar.pipeline) calls them in order with a timeout
each and turns every failure into a value, so a provider can fail or hang but never
crash the node or delay an advertisement.

Errors: raise a ProviderError subclass to say what kind of failure it is. The runtime
reads the kind (a Veto refuses a promotion, OwnershipLost steps down at once, a
RetryableError is retried on the next tick or transition, a PermanentError needs an
operator); any other exception counts as permanent.

Timing: the runtime tells a provider when it will call check() next (VipContext.timing);
providers never copy the runtime's tick or jitter constants.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.inet import IPAddress


class ErrorKind(enum.Enum):
    VETO = "veto"  # pre_master: this node must not claim (a fence held elsewhere)
    OWNERSHIP_LOST = "ownership_lost"  # the VIP belongs to someone else now
    RETRYABLE = "retryable"  # transient (network, throttling); the same call may work later
    PERMANENT = "permanent"  # configuration, permissions, a bug: retrying will not help


class ProviderError(Exception):
    """Base of every error a provider raises on purpose."""

    kind: ErrorKind = ErrorKind.PERMANENT


class Veto(ProviderError):
    """Raised by pre_master() to refuse a promotion, with the reason as message."""

    kind = ErrorKind.VETO


class OwnershipLost(ProviderError):
    """The VIP (or its fence: a lease, a cloud claim) now belongs to another node."""

    kind = ErrorKind.OWNERSHIP_LOST


class RetryableError(ProviderError):
    kind = ErrorKind.RETRYABLE


class PermanentError(ProviderError):
    kind = ErrorKind.PERMANENT


class ProviderConfigError(PermanentError, ValueError):
    """Bad provider options; raised at start-up, before any transition."""


def error_kind(exc: BaseException) -> ErrorKind:
    """The kind of any exception a provider hook raised (unknown ones are permanent)."""
    if isinstance(exc, ProviderError):
        return exc.kind
    if isinstance(exc, TimeoutError):
        return ErrorKind.RETRYABLE
    return ErrorKind.PERMANENT


@dataclass(frozen=True)
class Timing:
    """When the runtime calls check(), told to the provider instead of it guessing.

    check_within_s: the latest, in seconds after the start of the current check(), at
    which the next check() starts (the provider's reassert_interval plus the runtime's
    jitter and housekeeping grid). grid_s: the runtime's housekeeping period; check()
    runs on that grid, so it may come up to one grid step late.
    """

    check_within_s: float | None = None
    grid_s: float = 1.0


def _always() -> bool:
    return True


@dataclass
class VipContext:
    """What a provider may know about the VIP and the transition it acts on."""

    vip: VipConfig
    node_name: str
    epoch: int = 0  # increments on every promotion; providers stamp it for fencing
    reason: str = ""
    timing: Timing = field(default_factory=Timing)
    # True while the runtime wants this node to be MASTER. A hook still running after a
    # demotion (a slow check()) reads it to stop before changing anything outside.
    is_master: Callable[[], bool] = _always

    @property
    def addr(self) -> IPAddress:
        return self.vip.addr

    @property
    def interface(self) -> str:
        return self.vip.interface


Preflight = list[tuple[bool, str]]


class Provider:
    """Base class; override what the provider needs. All hooks are coroutines."""

    name: str = "provider"
    #: seconds between check() calls while MASTER (None: never)
    reassert_interval: float | None = None
    #: True if pre_master() can refuse promotions (the runtime then confirms them)
    can_veto: bool = False
    #: True if this provider sends its own gratuitous ARPs (runtime GARPs stay quiet)
    announces: bool = False
    #: True if down() needs no init() and only undoes local state (the alias): it then
    #: also runs at start-up before any provider initialises, so a restarted node's
    #: stale VIP does not wait for a slow init (a kubernetes client, an API that is down)
    down_before_init: bool = False

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
        """While MASTER, every reassert_interval: verify and repair. Return True if
        something had to be repaired; raise (OwnershipLost, ...) if the VIP cannot be
        held (the node then steps down)."""
        return False

    async def preflight(self) -> Preflight:
        """`vip-sidecar check`, after init(): (ok, text) lines proving that the provider
        could act (reachability, permissions as dry runs). Must change nothing."""
        return [(True, "initialised")]

    async def close(self) -> None:
        """Release clients at exit."""

    def status(self) -> dict[str, Any]:
        """Provider-specific facts for /status; numeric values also become metrics
        (vip_sidecar_provider_value{provider,key})."""
        return {}
