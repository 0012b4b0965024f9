"""Live reload (`vip-sidecar ctl reload`, the systemd units' ExecReload=).

The configuration is read again exactly as at start-up (same command line, files and
environment). Nothing changes until all of it is valid and every new interface's sockets
are open; then, VIP by VIP (a VIP is its interface and vhid):

- unchanged: untouched, so it keeps its state and mastership (no transition, no advert
  missed, no address removed);
- removed: stopped like at shutdown (bow-out advert, wait for the successor, release);
- added: started like at start-up;
- only its providers changed (`providers`, scripts, `xparam`, `script_timeout`): the
  new pipeline replaces the old one at once on a BACKUP node (old providers closed, the
  new ones initialised and their down actions run, as at start-up), and on a MASTER at
  its next move to BACKUP: the address is never dropped because of a reload;
- anything else about it changed (advskew, password, peers...): it is restarted
  (bow-out, then started again with the new settings).

Daemon-wide settings that only take effect at start (http, sockets, logging) are kept
and reported as `restart_required`. SIGHUP keeps ucarp's meaning (a graceful exit).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vip_sidecar.config import Config, VipConfig
from vip_sidecar.election import State
from vip_sidecar.log import event
from vip_sidecar.providers.base import Provider
from vip_sidecar.transport import InterfaceTransport, TransportError

if TYPE_CHECKING:
    from vip_sidecar.instance import VipInstance
    from vip_sidecar.runtime import Runtime

Loader = Callable[[], tuple[Config, dict[str, list[Provider]]]]
Key = tuple[str, int]

PROVIDER_FIELDS = ("providers", "upscript", "downscript", "xparam", "script_timeout")
# read once at start-up: a reload keeps the running values and says a restart is needed
RESTART_FIELDS = (
    "http",
    "status_socket",
    "status_socket_group",
    "daemonize",
    "facility",
    "log_format",
    "syslog_socket",
    "debug",
)
SWAP_POLL_S = 0.1


class ReloadRejected(ValueError):
    """The new configuration is invalid or cannot be applied; nothing was changed."""


def key(vip: VipConfig) -> Key:
    return (vip.interface, vip.vhid)


@dataclass
class Diff:
    added: list[VipConfig] = field(default_factory=list)
    removed: list[Key] = field(default_factory=list)
    unchanged: list[VipConfig] = field(default_factory=list)
    swapped: list[VipConfig] = field(default_factory=list)
    restarted: list[VipConfig] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)


def diff(old: Config, new: Config) -> Diff:
    """What a reload from `old` to `new` does, VIP by VIP (pure: unit-tested alone)."""
    d = Diff()
    before = {key(v): v for v in old.vips}
    after = {key(v): v for v in new.vips}
    d.removed = [k for k in before if k not in after]
    for k, vip in after.items():
        was = before.get(k)
        if was is None:
            d.added.append(vip)
        elif was == vip:
            d.unchanged.append(vip)
        elif dataclasses.replace(was, **{f: getattr(vip, f) for f in PROVIDER_FIELDS}) == vip:
            d.swapped.append(vip)
        else:
            d.restarted.append(vip)
    d.restart_required = [f for f in RESTART_FIELDS if getattr(old, f) != getattr(new, f)]
    return d


class Reloader:
    def __init__(self, runtime: Runtime, loader: Loader) -> None:
        self.runtime = runtime
        self.loader = loader
        self._lock = asyncio.Lock()
        self._pending: dict[Key, asyncio.Task[None]] = {}
        self.last: dict[str, Any] | None = None

    def pending(self) -> list[str]:
        return sorted(
            f"{ifname}/{vhid}" for (ifname, vhid), t in self._pending.items() if not t.done()
        )

    async def reload(self) -> dict[str, Any]:
        async with self._lock:
            systemd = self.runtime.systemd
            systemd.reloading()
            event(logging.INFO, "reloading configuration", event="reload")
            try:
                result = await self._reload()
            except ReloadRejected as exc:
                event(logging.ERROR, f"reload rejected: {exc}", event="reload_rejected")
                systemd.reloaded(str(exc))
                raise
            systemd.reloaded()
            event(logging.INFO, "configuration reloaded", event="reloaded", **result)
            self.last = result
            return result

    async def _reload(self) -> dict[str, Any]:
        rt = self.runtime
        try:
            config, providers = self.loader()
        except ValueError as exc:  # ConfigError is a ValueError naming the field
            raise ReloadRejected(str(exc)) from None
        d = diff(rt.config, config)
        # open the sockets of new interfaces first: the last step that can fail
        opened: dict[str, InterfaceTransport] = {}
        try:
            for vip in d.added + d.restarted:
                if vip.interface not in rt.transports and vip.interface not in opened:
                    opened[vip.interface] = rt.transport_factory(vip.interface)
                (opened.get(vip.interface) or rt.transports[vip.interface]).require(vip.addr)
        except (OSError, TransportError) as exc:
            for transport in opened.values():
                transport.close()
            raise ReloadRejected(f"interface: {exc}") from None

        kept = {f: getattr(rt.config, f) for f in d.restart_required}
        rt.config = dataclasses.replace(config, **kept)
        by_key = {key(i.cfg): i for i in rt.instances}
        going = [by_key[k] for k in d.removed] + [by_key[key(v)] for v in d.restarted]
        for inst in going:
            self._cancel_pending(key(inst.cfg))
        await self._stop(going)
        for inst in going:
            rt.forget_vip(inst)
        started = [
            rt.add_vip(vip, providers.get(vip.name, []), opened.get(vip.interface))
            for vip in d.added + d.restarted
        ]
        await asyncio.gather(*(inst.start() for inst in started))
        for inst in rt.instances:
            inst.config = rt.config
        swapped_now, deferred = [], []
        for vip in d.swapped:
            inst = by_key[key(vip)]
            self._cancel_pending(key(vip))
            if _settled_backup(inst):
                await swap_providers(inst, vip, providers.get(vip.name, []))
                swapped_now.append(vip.name)
            else:
                self._pending[key(vip)] = asyncio.ensure_future(
                    self._swap_when_backup(inst, vip, providers.get(vip.name, []))
                )
                deferred.append(vip.name)
        return {
            "added": [v.name for v in d.added],
            "removed": [by_key[k].cfg.name for k in d.removed],
            "restarted": [v.name for v in d.restarted],
            "providers_swapped": swapped_now,
            "providers_swap_at_next_backup": deferred,
            "unchanged": [v.name for v in d.unchanged],
            "restart_required": d.restart_required,
        }

    async def _stop(self, going: list[VipInstance]) -> None:
        """Removed VIPs leave like at shutdown: bow-out, successor heard, release."""
        if not going:
            return
        timeout = self.runtime.config.shutdown_timeout
        deadline = asyncio.get_running_loop().time() + timeout
        await asyncio.gather(
            *(inst.stop(min(timeout / 2, 3 * inst.election.interval_s()), deadline)
              for inst in going)
        )  # fmt: skip

    async def _swap_when_backup(
        self, inst: VipInstance, vip: VipConfig, providers: list[Provider]
    ) -> None:
        """A MASTER keeps its providers (and the address) until it is BACKUP again."""
        while not _settled_backup(inst):
            await asyncio.sleep(SWAP_POLL_S)
        await swap_providers(inst, vip, providers)

    def _cancel_pending(self, k: Key) -> None:
        task = self._pending.pop(k, None)
        if task is not None:
            task.cancel()


def _settled_backup(inst: VipInstance) -> bool:
    return (
        inst.election.state is not State.MASTER
        and inst.desired is State.BACKUP
        and inst.applied is not State.MASTER
    )


async def swap_providers(inst: VipInstance, vip: VipConfig, providers: list[Provider]) -> None:
    """New pipeline on a BACKUP instance, under its worker lock so no provider action
    runs meanwhile; then the new providers' down actions run, as at start-up."""
    old = await inst.swap_providers(vip, providers)
    event(
        logging.INFO,
        f"providers swapped: {', '.join(p.name for p in providers) or 'none'}",
        vip=vip.name,
        event="providers_swapped",
    )
    await old.close()
    inst.reconcile()
