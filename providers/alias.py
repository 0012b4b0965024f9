"""The local IP alias: add the VIP on the interface when MASTER, remove it otherwise.

pyroute2 netlink calls (no `ip` binary needed), idempotent in both directions, then
gratuitous ARPs on ucarp's schedule by default (one right away, one two advert
intervals later; count and spacing configurable). While MASTER the address is checked
every `reassert_interval` and put back if someone removed it (ucarp issue #26: ucarp
never notices). `nonlocal_bind: true` sets net.ipv4.ip_nonlocal_bind so services can
bind the VIP on a BACKUP too and are ready the moment the address arrives.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path
from typing import Any

from providers.base import Provider, ProviderConfigError, VipContext
from sidecar import carp, netif, parsing
from sidecar.config import Config, ProviderSpec, VipConfig
from sidecar.log import event

NONLOCAL_BIND = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")


class AliasProvider(Provider):
    name = "alias"
    announces = True

    def __init__(self, spec: ProviderSpec, vip: VipConfig, config: Config) -> None:
        super().__init__(spec, vip, config)
        bag = parsing.OptionBag("alias", spec.options, ProviderConfigError)
        advert_interval = vip.advbase + vip.advskew / 256
        self.prefix = bag.take("prefix", parsing.integer(1, 32), 32)
        self.garp_count = bag.take("garp_count", parsing.integer(0, 100), 2)
        self.garp_interval = bag.take(
            "garp_interval", parsing.number(0.0, 3600.0), 2 * advert_interval
        )
        self.reassert_interval = bag.take("reassert_interval", parsing.number(0.1, 3600.0), 5.0)
        self.nonlocal_bind = bag.take("nonlocal_bind", parsing.boolean, False)
        self.interface = bag.take("interface", parsing.text, vip.interface)
        bag.finish()
        self._garp_task: asyncio.Task[None] | None = None

    async def init(self) -> None:
        if self.nonlocal_bind:
            await asyncio.to_thread(NONLOCAL_BIND.write_text, "1\n")
            event(
                logging.INFO,
                "net.ipv4.ip_nonlocal_bind=1: services may bind the VIP on BACKUP",
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
        from pyroute2 import AsyncIPRoute

        async with AsyncIPRoute() as ipr:
            index = await self._index(ipr)
            async for msg in await ipr.addr("dump", index=index):
                if msg.get("IFA_ADDRESS") == str(self.vip.addr):
                    return True
        return False

    async def _index(self, ipr: Any) -> int:
        found = await ipr.link_lookup(ifname=self.interface)
        if not found:
            raise RuntimeError(f"interface {self.interface} not found")
        return int(found[0])

    async def _change(self, command: str) -> bool:
        """Add or delete the address; True if something changed (idempotent)."""
        from pyroute2 import AsyncIPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        async with AsyncIPRoute() as ipr:
            index = await self._index(ipr)
            try:
                await ipr.addr(
                    command, index=index, address=str(self.vip.addr), prefixlen=self.prefix
                )
            except NetlinkError as exc:
                # already there / already gone is the state we want
                if exc.code in (errno.EEXIST, errno.EADDRNOTAVAIL, errno.ESRCH, errno.ENOENT):
                    return False
                raise
        return True

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
        frame = carp.encode_garp(mac, self.vip.addr)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0) as s:
            s.bind((self.interface, 0))
            for i in range(self.garp_count if count is None else count):
                if i:
                    await asyncio.sleep(self.garp_interval)
                try:
                    s.send(frame)
                except OSError as exc:
                    event(
                        logging.WARNING,
                        f"gratuitous ARP failed: {exc.strerror}",
                        vip=self.vip.name,
                        provider=self.name,
                    )


def create(spec: ProviderSpec, vip: VipConfig, config: Config) -> Any:
    return AliasProvider(spec, vip, config)
