"""The process: sockets per interface, dispatch by vhid, signals, graceful shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vip_sidecar import carp, carp6, netif
from vip_sidecar.config import Config, VipConfig
from vip_sidecar.election import Reason, State
from vip_sidecar.instance import VipInstance
from vip_sidecar.log import RateLimitedWarnings, event
from vip_sidecar.providers.base import Provider
from vip_sidecar.providers.registry import load_provider
from vip_sidecar.sdnotify import SystemdBridge
from vip_sidecar.wakeups import next_housekeeping, round_may_start, sleep_until

if TYPE_CHECKING:
    from vip_sidecar.reload import Reloader
from vip_sidecar.transport import InterfaceTransport, TransportError

HOUSEKEEPING_S = 1.0
MIN_TICK_S = 0.1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)
USR2_HOLD_S = 3.0  # ucarp sleeps 3 s after a SIGUSR2 demotion, then a full dead interval


def node_name() -> str:
    return os.environ.get("NODE_NAME") or os.environ.get("POD_NAME") or socket.gethostname()


def build_providers(config: Config) -> dict[str, list[Provider]]:
    """Instantiate (and so validate) every configured provider before anything runs."""
    return {
        vip.name: [load_provider(spec, vip, config) for spec in vip.providers]
        for vip in config.vips
    }


class Runtime:
    def __init__(
        self,
        config: Config,
        providers: dict[str, list[Provider]] | None = None,
        *,
        transport_factory: Callable[[str], InterfaceTransport] = InterfaceTransport,
        handle_signals: bool = True,
    ) -> None:
        self.config = config
        self.transport_factory = transport_factory
        self._handle_signals = handle_signals
        self._providers = providers if providers is not None else build_providers(config)
        self.transports: dict[str, InterfaceTransport] = {}
        self.instances: list[VipInstance] = []
        self._by_vhid: dict[tuple[str, int], VipInstance] = {}
        self._own_src: dict[str, set[Any]] = {}
        self.iface_drops: Counter[tuple[str, str]] = Counter()
        self._stop = asyncio.Event()
        self.started_at = time.time()
        self.loop_heartbeat = 0.0
        self._warn = RateLimitedWarnings()
        self._housekeeper: asyncio.Task[None] | None = None
        self._tick = HOUSEKEEPING_S
        self._carrier: dict[str, bool] = {}
        self.systemd = SystemdBridge(self)
        self.reloader: Reloader | None = None  # set by the CLI: `ctl reload` re-reads its config
        self._src_present: dict[str, bool] = {}
        # the housekeeping round's wake-up and its due time, for _on_readable
        self._round: asyncio.Future[None] | None = None
        self._round_at = 0.0
        self._round_on_advert = False

    # -- lifecycle -------------------------------------------------------------------
    async def run(self) -> None:
        await self.start()
        self.systemd.started()
        await self._stop.wait()
        self.systemd.stopping()
        try:
            await self.shutdown()
        finally:
            self.systemd.close()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for vip in self.config.vips:
            self.add_vip(vip, self._providers.get(vip.name, []))
        if self._handle_signals:
            for sig in STOP_SIGNALS:
                loop.add_signal_handler(sig, self.request_stop, sig.name)
            loop.add_signal_handler(signal.SIGUSR1, self.log_states)
            loop.add_signal_handler(signal.SIGUSR2, self.demote_masters)
        for transport in self.transports.values():
            self._watch(transport)
        await asyncio.gather(*(inst.start() for inst in self.instances))
        self.loop_heartbeat = time.monotonic()  # alive now, before the first housekeeping
        self._housekeeper = asyncio.ensure_future(self._housekeeping())

    def add_vip(
        self, vip: VipConfig, providers: list[Provider], transport: InterfaceTransport | None = None
    ) -> VipInstance:
        """Wire one VIP to its interface's sockets (opened on first use); start() and a
        reload (vip_sidecar.reload) both come through here."""
        if vip.interface not in self.transports:
            transport = transport or self.transport_factory(vip.interface)
            self.transports[vip.interface] = transport
            event(
                logging.INFO,
                f"Local advertised ethernet address is [{netif.format_mac(transport.mac)}]",
                interface=vip.interface,
            )
            if self._housekeeper is not None:  # a reload: the loop already reads the others
                self._watch(transport)
        transport = self.transports[vip.interface]
        if not vip.peers and not vip.nomcast:
            transport.join(vip.mcast)
        self._own_src.setdefault(vip.interface, set()).add(vip.srcip)
        inst = VipInstance(vip, self.config, transport, providers, node_name())
        self.instances.append(inst)
        self._by_vhid[(vip.interface, vip.vhid)] = inst
        return inst

    def forget_vip(self, inst: VipInstance) -> None:
        """After inst.stop(): stop dispatching to it; close an interface nobody uses."""
        self.instances.remove(inst)
        self._by_vhid.pop((inst.cfg.interface, inst.cfg.vhid), None)
        left = [i for i in self.instances if i.cfg.interface == inst.cfg.interface]
        self._own_src[inst.cfg.interface] = {i.cfg.srcip for i in left}
        if not left:
            transport = self.transports.pop(inst.cfg.interface)
            self._unwatch(transport)
            transport.close()

    def request_stop(self, why: str = "request") -> None:
        if self._stop.is_set():
            # an operator insisting (second Ctrl-C / TERM): leave now, skipping the rest
            event(
                logging.ERROR,
                f"second {why}: exiting at once, down actions skipped",
                event="forced_exit",
            )
            os._exit(1)
        else:
            event(
                logging.WARNING,
                f"{why} received: shutting down gracefully",
                event="stop",
                signal=why,
            )
            self._stop.set()

    async def shutdown(self) -> None:
        timeout = self.config.shutdown_timeout
        # leave a little of the budget for closing sockets and the HTTP server
        deadline = asyncio.get_running_loop().time() + max(0.0, timeout - 0.25)
        waits = [min(timeout / 2, 3 * inst.election.interval_s()) for inst in self.instances]
        await asyncio.gather(
            *(inst.stop(wait, deadline) for inst, wait in zip(self.instances, waits, strict=True))
        )
        if self._housekeeper is not None:
            self._housekeeper.cancel()
        loop = asyncio.get_running_loop()
        for transport in self.transports.values():
            self._unwatch(transport)
            transport.close()
        if self._handle_signals:
            for sig in (*STOP_SIGNALS, signal.SIGUSR1, signal.SIGUSR2):
                loop.remove_signal_handler(sig)
        event(logging.INFO, "stopped", event="stopped")

    # -- receive ---------------------------------------------------------------------
    def _on_readable(self, transport: InterfaceTransport) -> None:
        try:
            batch = transport.receive()
        except OSError as exc:  # e.g. ENETDOWN when the link is set admin-down
            self._warn.warn(
                f"recv/{transport.ifname}",
                f"receive on {transport.ifname} failed: {exc.strerror or exc}",
                interface=transport.ifname,
                event="recv_error",
            )
            return
        for received in batch:
            if received.incoming:
                self.dispatch_decoded(transport.ifname, received.decode())
        # a BACKUP wakes up for every advert it hears: when the housekeeping round is
        # nearly due, run it now rather than wake up again for it (one wake-up a second
        # instead of two; a wake-up is most of an idle daemon's CPU)
        rnd = self._round
        now = asyncio.get_running_loop().time()
        if rnd is not None and not rnd.done() and round_may_start(now, self._round_at, self._tick):
            self._round_on_advert = True
            rnd.set_result(None)

    def _watch(self, transport: InterfaceTransport) -> None:
        for fd in transport.filenos():
            asyncio.get_running_loop().add_reader(fd, self._on_readable, transport)

    def _unwatch(self, transport: InterfaceTransport) -> None:
        for fd in transport.filenos():
            asyncio.get_running_loop().remove_reader(fd)

    def dispatch(self, ifname: str, data: bytes) -> carp.DropReason | None:
        return self.dispatch_decoded(ifname, carp.decode_ip(data))

    def dispatch_decoded(
        self, ifname: str, pkt: carp.Packet | carp.DropReason
    ) -> carp.DropReason | None:
        """ucarp's receive checks 1-7 (interface level), then hand the packet to the vhid's
        instance, which runs the rest. IPv4 and IPv6 adverts take the same path."""
        if isinstance(pkt, carp.DropReason):
            return self._drop(ifname, pkt, None)
        if pkt.src in self._own_src.get(ifname, ()):
            return self._drop(ifname, carp.DropReason.OWN_PACKET, None)
        inst = self._by_vhid.get((ifname, pkt.adv.vhid))
        if not carp6.hop_limit_ok(pkt, inst.cfg.peers if inst is not None else ()):
            self._warn.warn(
                f"ttl/{ifname}",
                f"Bad TTL: [{pkt.ttl}]",
                interface=ifname,
                event="drop",
                reason="bad_ttl",
                src=str(pkt.src),
            )
            return self._drop(ifname, carp.DropReason.BAD_TTL, inst)
        if pkt.adv.version != carp.CARP_VERSION:
            self._warn.warn(
                f"ver/{ifname}",
                f"Bad version: [{pkt.adv.version}]",
                interface=ifname,
                event="drop",
                reason="bad_version",
            )
            return self._drop(ifname, carp.DropReason.BAD_VERSION, inst)
        if inst is None:
            event(logging.DEBUG, f"Ignoring vhid: [{pkt.adv.vhid}]", interface=ifname)
            return self._drop(ifname, carp.DropReason.UNKNOWN_VHID, None)
        return inst.on_packet(pkt)

    def _drop(
        self, ifname: str, reason: carp.DropReason, inst: VipInstance | None
    ) -> carp.DropReason:
        if inst is not None:
            inst.stats.drops[reason.value] += 1
        else:
            self.iface_drops[(ifname, reason.value)] += 1
        return reason

    # -- signals ---------------------------------------------------------------------
    def log_states(self) -> None:
        for inst in self.instances:
            event(
                logging.INFO,
                inst.state_line(),
                vip=inst.cfg.name,
                event="usr1",
                state=inst.election.state.name,
            )

    def demote_masters(self) -> None:
        for inst in self.instances:
            if inst.election.state is State.MASTER:
                event(
                    logging.WARNING,
                    "Caught signal (USR2) considering going down",
                    vip=inst.cfg.name,
                    event="usr2",
                )
                inst.apply(
                    inst.election.step_down(Reason.STEP_DOWN, USR2_HOLD_S, dead_after_hold=True)
                )

    # -- housekeeping ----------------------------------------------------------------
    def tick_s(self) -> float:
        """Housekeeping period: 1 s, or faster when a provider wants to check more often."""
        periods = [
            p.reassert_interval
            for inst in self.instances
            for p in inst.pipeline.providers
            if p.reassert_interval is not None
        ]
        return max(MIN_TICK_S, min([HOUSEKEEPING_S, *periods]))

    async def _housekeeping(self) -> None:
        tick = self._tick = self.tick_s()
        for inst in self.instances:
            inst.grid_s = tick  # providers are told when their next check() comes
        loop = asyncio.get_running_loop()
        while True:
            self.loop_heartbeat = time.monotonic()
            for ifname in self.transports:
                self._check_carrier(ifname)
                self._count_kernel_drops(ifname)
            for inst in self.instances:
                inst.housekeeping()
            timers = [i.timer_at() for i in self.instances]
            when = next_housekeeping(loop.time(), tick, timers, self._round_on_advert)
            self._round, self._round_at, self._round_on_advert = loop.create_future(), when, False
            await sleep_until(loop, when, self._round)

    def _count_kernel_drops(self, ifname: str) -> None:
        n = self.transports[ifname].take_kernel_drops()
        if n:
            # the kernel does not say which VIP the lost packets were for
            self.iface_drops[(ifname, carp.DropReason.KERNEL_RCVBUF.value)] += n
            self._warn.warn(
                f"rcvbuf/{ifname}",
                f"receive buffer of {ifname} overflowed: the kernel dropped {n} packets",
                interface=ifname,
                event="drop",
                reason=carp.DropReason.KERNEL_RCVBUF.value,
                count=n,
            )

    def _check_carrier(self, ifname: str) -> None:
        state = netif.link_state(ifname)
        up = state.carrier and self._transport_current(ifname)
        if self._carrier.get(ifname, True) != up:
            level = logging.INFO if up else logging.ERROR
            what = (
                "carrier is back"
                if up
                else ("has no carrier" if state.exists else "has disappeared")
            )
            event(
                level, f"interface {ifname} {what}", interface=ifname, event="carrier", carrier=up
            )
        self._carrier[ifname] = up
        addresses = self._addresses(ifname) if state.exists else set()
        for inst in self.instances:
            if inst.cfg.interface != ifname:
                continue
            # an srcip removed from the interface would make us advertise (and win) from
            # an address the host no longer owns: the link counts as down until it is back
            has_src = inst.cfg.srcip in addresses
            if self._src_present.get(inst.cfg.name, True) != has_src:
                event(
                    logging.INFO if has_src else logging.ERROR,
                    f"srcip {inst.cfg.srcip} is {'back' if has_src else 'no longer'} on "
                    f"{ifname}" + ("" if has_src else ": counting the link as down"),
                    vip=inst.cfg.name,
                    interface=ifname,
                    event="srcip",
                    present=has_src,
                )
            self._src_present[inst.cfg.name] = has_src
            link_ok = (up or inst.cfg.ignoreifstate) and has_src
            inst.apply(inst.election.set_carrier(link_ok))

    def _addresses(self, ifname: str) -> set[Any]:
        try:
            return netif.addresses(ifname)
        except OSError as exc:  # a failed dump is no proof the address is gone
            self._warn.warn(
                f"addr/{ifname}", f"cannot list the addresses of {ifname}: {exc}", event="netif"
            )
            return set(self._own_src.get(ifname, ()))

    def _transport_current(self, ifname: str) -> bool:
        """Sockets are bound to an ifindex: when the interface is deleted and created
        again under the same name (CNI, bond or VLAN rebuilt) they hear and send nothing
        any more, and a deaf node would claim the VIP. Reopen them on the new interface;
        until that works the link counts as down."""
        transport = self.transports[ifname]
        old_index = getattr(transport, "ifindex", None)
        try:
            index = netif.ifindex(ifname)
        except OSError:
            return False
        if old_index is None or index == old_index:
            return True
        try:
            fresh = self.transport_factory(ifname)
            for inst in self.instances:
                if inst.cfg.interface == ifname and not inst.cfg.peers and not inst.cfg.nomcast:
                    fresh.join(inst.cfg.mcast)
        except (OSError, TransportError) as exc:
            self._warn.warn(
                f"reopen/{ifname}",
                f"interface {ifname} was re-created; reopening its sockets failed: {exc}",
                interface=ifname,
                event="transport_error",
            )
            return False
        event(
            logging.WARNING,
            f"interface {ifname} was re-created (index {old_index} -> {index}): sockets reopened",
            interface=ifname,
            event="transport_reopened",
        )
        self._unwatch(transport)
        transport.close()
        self.transports[ifname] = fresh
        self._watch(fresh)
        for inst in self.instances:
            if inst.cfg.interface == ifname:
                inst.transport = fresh
        return True

    # -- views -----------------------------------------------------------------------
    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        """Alive = the housekeeping loop ran recently and every MASTER advertised on time."""
        now = time.monotonic() if now is None else now
        if now - self.loop_heartbeat > 5 * HOUSEKEEPING_S:
            return False, f"event loop stalled for {now - self.loop_heartbeat:.1f}s"
        for inst in self.instances:
            if inst.election.state is State.MASTER and inst.last_advert_sent:
                late = now - inst.last_advert_sent
                if late > 3 * inst.election.interval_s() + 1:
                    return False, f"{inst.cfg.name}: no advertisement sent for {late:.1f}s"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        if not self.instances:
            return False, "not started"
        not_ready = [i.cfg.name for i in self.instances if not i.ready]
        if not_ready:
            return False, f"provider initialisation failed for {', '.join(not_ready)}"
        return True, "ok"

    def status(self) -> dict[str, Any]:
        ok, why = self.healthy()
        rdy, rwhy = self.ready()
        return {
            "node": node_name(),
            "pid": os.getpid(),
            "started_at": self.started_at,
            "healthy": ok,
            "health_detail": why,
            "ready": rdy,
            "ready_detail": rwhy,
            "vips": [inst.status() for inst in self.instances],
            "reload": None
            if self.reloader is None
            else {"last": self.reloader.last, "pending_provider_swaps": self.reloader.pending()},
            "interface_drops": {f"{i}/{r}": n for (i, r), n in self.iface_drops.items()},
            "receive_buffer_bytes": {name: t.rcvbuf for name, t in self.transports.items()},
        }
