"""The local IP alias: add the VIP on the interface when MASTER, remove it otherwise.

One raw netlink request each way (vip_sidecar.netif: no `ip` binary, no pyroute2),
idempotent in both directions, then gratuitous ARPs on ucarp's schedule by default (one
right away, one two advert intervals later; count and spacing configurable). While
MASTER the address is checked every `reassert_interval` and put back if someone removed
it (ucarp issue #26: ucarp never notices). `nonlocal_bind: true` sets
net.ipv4.ip_nonlocal_bind so services can bind the VIP on a BACKUP too and are ready the
moment the address arrives.

An IPv6 VIP is added `nodad` (/128 by default) and announced with unsolicited
neighbour advertisements (override flag, to ff02::1) on the same schedule as the GARPs;
`nonlocal_bind` then sets net.ipv6.ip_nonlocal_bind.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from vip_sidecar import announce, netif, parsing
from vip_sidecar.config import Config, ProviderSpec, VipConfig
from vip_sidecar.log import event
from vip_sidecar.providers.base import Provider, ProviderConfigError, VipContext

NONLOCAL_BIND = {
    4: Path("/proc/sys/net/ipv4/ip_nonlocal_bind"),
    6: Path("/proc/sys/net/ipv6/ip_nonlocal_bind"),  # Linux 4.3+
}


class AliasProvider(Provider):
    name = "alias"
    announces = True
    down_before_init = True

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        bag = parsing.OptionBag("alias", spec.options, ProviderConfigError)
        advert_interval = vip.advbase + vip.advskew / 256
        bits: int = vip.addr.max_prefixlen  # 32 or 128: a host route of the VIP's family
        self.prefix = bag.take("prefix", parsing.integer(1, bits), bits)
        self.garp_count = bag.take("garp_count", parsing.integer(0, 100), 2)
        self.garp_interval = bag.take(
            "garp_interval", parsing.number(0.0, 3600.0), 2 * advert_interval
        )
        # 1 s: an address deleted by hand is back within about one advert interval (the
        # chaos soak's invariant b); the check is one netlink dump, ~0.2 ms, riding on the
        # housekeeping round the daemon does every second anyway
        self.reassert_interval = bag.take("reassert_interval", parsing.number(0.1, 3600.0), 1.0)
        self.nonlocal_bind = bag.take("nonlocal_bind", parsing.boolean, False)
        self.interface = bag.take("interface", parsing.text, vip.interface)
        bag.finish()
        self._garp_task: asyncio.Task[None] | None = None

    async def init(self) -> None:
        if self.nonlocal_bind:
            path = NONLOCAL_BIND[self.vip.addr.version]
            await asyncio.to_thread(path.write_text, "1\n")
            event(
                logging.INFO,
                f"net.{path.parent.name}.ip_nonlocal_bind=1: services may bind the VIP "
                "on BACKUP",
                vip=self.vip.name,
                provider=self.name,
            )

    async def up(self, ctx: VipContext) -> None:
        added = await self._change("add")
        if added:
            event(
                logging.INFO,
                f"added {self.vip.addr}/{self.prefix} on {self.interface}",
                vip=self.vip.name,
                provider=self.name,
                event="alias_add",
            )
        self._start_garps()

    async def down(self, ctx: VipContext) -> None:
        self._stop_garps()
        removed = await self._change("del")
        if removed:
            event(
                logging.INFO,
                f"removed {self.vip.addr}/{self.prefix} from {self.interface}",
                vip=self.vip.name,
                provider=self.name,
                event="alias_del",
            )

    async def check(self, ctx: VipContext) -> bool:
        if await self.present():
            return False
        await self._change("add")
        self._start_garps()
        return True

    async def close(self) -> None:
        self._stop_garps()

    def announce(self) -> None:
        if self.vip.garp and (self._garp_task is None or self._garp_task.done()):
            self._garp_task = asyncio.ensure_future(self._garps(count=1))

    async def present(self) -> bool:
        # netif's table is dumped once per change the kernel announces and shared by
        # every VIP: hundreds of checks cost one dump, and an idle check costs none
        return str(self.vip.addr) in netif.address_table().get(self._index(), ())

    def _index(self) -> int:
        try:
            return netif.ifindex(self.interface)
        except OSError:
            raise RuntimeError(f"interface {self.interface} not found") from None

    async def _change(self, command: str) -> bool:
        """Add or delete the address; True if something changed (idempotent)."""
        index = self._index()
        # one local netlink request: answered in microseconds, no thread needed
        return netif.change_address(command, index, self.vip.addr, self.prefix)

    def _start_garps(self) -> None:
        self._stop_garps()
        if self.vip.garp and self.garp_count > 0:
            self._garp_task = asyncio.ensure_future(self._garps())

    def _stop_garps(self) -> None:
        if self._garp_task is not None:
            self._garp_task.cancel()
            self._garp_task = None

    async def _garps(self, count: int | None = None) -> None:
        _, mac = netif.hardware_address(self.interface)
        addr = self.vip.addr
        for i in range(self.garp_count if count is None else count):
            if i:
                await asyncio.sleep(self.garp_interval)
            try:
                announce.ANNOUNCER.send(self.interface, addr, mac)
            except OSError as exc:
                event(
                    logging.WARNING,
                    f"{announce.what(addr)} failed: {exc.strerror or exc}",
                    vip=self.vip.name,
                    provider=self.name,
                )




def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Any:
    return AliasProvider(spec, vip, config)
