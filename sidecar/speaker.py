"""The CARP speaker of one VIP: what goes on and comes off the wire.

It owns the advert counter, the authenticator, the replay guard and the transport:
it sends adverts and gratuitous ARPs, and runs ucarp's per-VIP receive checks on
incoming adverts. It never decides anything: the election does (vip_sidecar.instance
wires the two).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from vip_sidecar import announce, carp
from vip_sidecar.config import VipConfig
from vip_sidecar.counter import AdvertCounter, ReplayGuard
from vip_sidecar.inet import IPAddress
from vip_sidecar.log import RateLimitedWarnings
from vip_sidecar.stats import VipStats
from vip_sidecar.transport import InterfaceTransport


@dataclass
class MasterSeen:
    src: str
    advbase: int
    advskew: int
    at: float  # wall clock


class Speaker:
    def __init__(
        self,
        cfg: VipConfig,
        transport: InterfaceTransport,
        stats: VipStats,
        clock: Callable[[], float],
    ) -> None:
        self.cfg = cfg
        self.transport = transport
        self.stats = stats
        self.clock = clock
        transport.require(cfg.addr)
        self.auth = carp.Authenticator(cfg.password, cfg.vhid, cfg.addr)
        self.counter = AdvertCounter(monotonic=cfg.replay_protection)
        self.replay = ReplayGuard() if cfg.replay_protection else None
        self.master_seen: MasterSeen | None = None
        self.last_valid_advert = 0.0  # monotonic
        self.last_advert_sent = 0.0  # monotonic
        self._warn = RateLimitedWarnings()

    # -- send ------------------------------------------------------------------------
    def send_advert(self, advbase: int, advskew: int) -> bool:
        """One advert to the group (or to every unicast peer); False if none went out."""
        counter = self.counter.next()
        payload = carp.encode_carp(
            self.cfg.vhid, advbase, advskew, counter, self.auth.digest(counter)
        )
        errors: list[OSError] = []
        if self.cfg.peers:
            # one unreachable peer must not silence the adverts to the others
            for peer in self.cfg.peers:
                try:
                    self._send(payload, peer, multicast=False)
                except OSError as exc:
                    errors.append(exc)
                    self._warn.warn(
                        f"write/{peer}",
                        f"write() to peer {peer} has failed: {exc.strerror or exc}",
                        vip=self.cfg.name,
                        event="send_error",
                        peer=str(peer),
                    )
            failed = len(errors) == len(self.cfg.peers)
        else:
            try:
                self._send(payload, self.cfg.mcast, multicast=True)
            except OSError as exc:
                errors.append(exc)
                self._warn.warn(
                    "write",
                    f"write() has failed: {exc.strerror or exc}",
                    vip=self.cfg.name,
                    event="send_error",
                )
            failed = bool(errors)
        self.stats.send_errors += len(errors)
        if not failed:
            self.stats.adverts_sent += 1
            self.last_advert_sent = self.clock()
        return not failed

    def _send(self, payload: bytes, dst: IPAddress, *, multicast: bool) -> None:
        """One advert to one destination: IPv6 as the bare header (the kernel frames it),
        IPv4 as ucarp's packet (an Ethernet frame for the group, a raw IP one unicast)."""
        src = self.cfg.srcip
        if isinstance(dst, IPv6Address) and isinstance(src, IPv6Address):
            self.transport.send_ipv6(payload, src, dst)
        elif isinstance(dst, IPv4Address) and isinstance(src, IPv4Address):
            packet = carp.encode_ip(payload, src, dst, secrets.randbits(16))
            if not multicast:
                self.transport.send_unicast(packet, dst)
                return
            self.transport.send_multicast(
                packet, self.cfg.vhid, dst, broadcast=self.cfg.nomcast, real_mac=self.cfg.real_mac
            )
        else:  # config.py makes every address of a VIP one family
            raise OSError(f"mixed address families: {src} -> {dst}")

    def send_garp(self) -> None:
        """ucarp's gratuitous ARP; for an IPv6 VIP the unsolicited neighbour advert."""
        addr = self.cfg.addr
        try:
            self.transport.announce(addr)
        except OSError as exc:
            self._warn.warn(
                "garp",
                f"{announce.what(addr)} failed: {exc.strerror or exc}",
                vip=self.cfg.name,
                event="garp_error",
            )

    # -- receive ---------------------------------------------------------------------
    def receive(self, pkt: carp.Packet) -> carp.DropReason | None:
        """Validate an advert for this VIP and remember its sender; None if it passed
        (the caller then hands it to the election)."""
        reason = self._validate(pkt)
        if reason is not None:
            self.stats.drops[reason.value] += 1
            return reason
        adv = pkt.adv
        if self.replay is not None:
            self.replay.accept(pkt.src, adv.counter)
        self.counter.heard(adv.counter)
        self.stats.adverts_received += 1
        self.last_valid_advert = self.clock()
        self.master_seen = MasterSeen(str(pkt.src), adv.advbase, adv.advskew, time.time())
        return None

    def _validate(self, pkt: carp.Packet) -> carp.DropReason | None:
        """ucarp's receive checks 8-10 plus our unicast and replay extensions, in order."""
        cfg, adv = self.cfg, pkt.adv
        if cfg.peers and pkt.src not in cfg.peers:
            return self._reject(
                pkt,
                carp.DropReason.NOT_A_PEER,
                f"advert from {pkt.src}, which is not a configured peer",
            )
        if pkt.dst != cfg.mcast and not (cfg.peers and pkt.dst == cfg.srcip):
            return carp.DropReason.WRONG_GROUP  # ucarp: debug only (other groups are normal)
        if carp.internet_checksum(pkt.checked_bytes) != 0:
            return self._reject(pkt, carp.DropReason.BAD_CHECKSUM, "Bad IP checksum")
        expected = self.auth.digest(adv.counter)
        if not hmac.compare_digest(expected, adv.digest):
            return self._reject(
                pkt,
                carp.DropReason.BAD_DIGEST,
                f"Bad digest - md2=[{expected[:4].hex()}...] md=[{adv.digest[:4].hex()}...] - "
                "Check vhid, password and virtual IP address",
            )
        if self.replay is not None and not self.replay.fresh(pkt.src, adv.counter):
            return self._reject(
                pkt, carp.DropReason.REPLAY, f"replayed advert from {pkt.src} (stale counter)"
            )
        return None

    def _reject(self, pkt: carp.Packet, reason: carp.DropReason, message: str) -> carp.DropReason:
        # ucarp warns for every bad packet; a flood of warnings is itself an outage
        self._warn.warn(
            reason.value,
            message,
            vip=self.cfg.name,
            event="drop",
            reason=reason.value,
            src=str(pkt.src),
        )
        return reason
