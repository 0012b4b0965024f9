"""The one registry of provider names: built-ins, entry points, dotted module paths.

A name in a config resolves, in this order, to
  1. a built-in provider (BUILTINS),
  2. a provider another distribution registered in the entry-point group
     `vip_sidecar.providers` (the entry point names a `create` factory or a Provider
     subclass; see docs/providers.md),
  3. a dotted module path with a `create(spec, vip, config)` function (tests, local
     experiments).
Modules are imported only when a provider is configured: boto3 and the kubernetes
client are heavy, and a node that only needs an alias never loads them.

This module must not import vip_sidecar.config (config validation uses it).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from functools import cache
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vip_sidecar.config import Config, ProviderSpec, VipConfig
    from vip_sidecar.providers.base import Provider

ENTRY_POINT_GROUP = "vip_sidecar.providers"

#: built-in name -> module (relative to this package) holding create()
BUILTINS: dict[str, str] = {
    "alias": "alias",
    "aws": "aws",
    "kubernetes": "kubernetes",
    "script": "script",
}


class UnknownProvider(LookupError):
    pass


@cache
def entry_points() -> dict[str, metadata.EntryPoint]:
    """Third-party providers installed in this environment, by name."""
    found = metadata.entry_points(group=ENTRY_POINT_GROUP)
    return {ep.name: ep for ep in found if ep.name not in BUILTINS}


def known_names() -> list[str]:
    return [*BUILTINS, *sorted(entry_points())]


def is_known(name: str) -> bool:
    """True if `name` can be resolved (dotted paths are checked when loaded)."""
    return name in BUILTINS or name in entry_points() or "." in name


def resolve(name: str) -> Callable[..., Any]:
    """The factory for `name`: called as factory(spec, vip, config) -> Provider."""
    if name in BUILTINS:
        target = f"{__package__}.{BUILTINS[name]}"
        return _factory(importlib.import_module(target), target)
    ep = entry_points().get(name)
    if ep is not None:
        loaded = ep.load()
        return _factory(loaded, ep.value) if isinstance(loaded, ModuleType) else loaded
    if "." in name:
        return _factory(importlib.import_module(name), name)
    raise UnknownProvider(f"unknown provider {name!r}; accepted: {', '.join(known_names())}")


def _factory(module: Any, where: str) -> Callable[..., Any]:
    factory: Callable[..., Any] | None = getattr(module, "create", None)
    if not callable(factory):
        raise UnknownProvider(f"{where} has no create()")
    return factory


def load_provider(spec: ProviderSpec, vip: VipConfig, config: Config) -> Provider:
    """Instantiate one configured provider; every problem is a ProviderConfigError."""
    from vip_sidecar.providers.base import Provider, ProviderConfigError

    try:
        factory = resolve(spec.name)
    except UnknownProvider as exc:
        raise ProviderConfigError(f"provider {spec.name!r}: {exc}") from None
    except ImportError as exc:
        raise ProviderConfigError(f"provider {spec.name!r}: cannot import it: {exc}") from None
    provider = factory(spec, vip, config)
    if not isinstance(provider, Provider):
        raise ProviderConfigError(f"provider {spec.name!r}: create() did not return a Provider")
    return provider
