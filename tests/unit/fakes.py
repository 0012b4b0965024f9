"""Test doubles shared by unit tests."""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from typing import Any

from vip_sidecar.config import VipConfig


def vip_config(**overrides: Any) -> VipConfig:
    """A valid VIP (vhid 1, 10.0.0.9 on eth0) with the given fields changed."""
    fields: dict[str, Any] = dict(
        interface="eth0",
        srcip=IPv4Address("10.0.0.2"),
        vhid=1,
        password=b"x",
        addr=IPv4Address("10.0.0.9"),
        addr_text="10.0.0.9",
        name="v",
    )
    fields.update(overrides)
    return VipConfig(**fields)


class FakeClock:
    """A monotonic clock the test moves by hand: no test ever sleeps for protocol time."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeTransport:
    """Stands in for InterfaceTransport: records what would go on the wire."""

    def __init__(self, ifname: str) -> None:
        import os

        self.ifname = ifname
        self.mac = bytes.fromhex("020000000099")
        self.ethernet = True
        self._r, self._w = os.pipe()  # a real fd the loop can watch; never readable
        self.sent: list[tuple[str, bytes]] = []
        self.kernel_drops = 0  # what PACKET_STATISTICS would report
        self.rcvbuf = 2 << 20
        self.ipv6 = True  # False: a kernel without IPv6 (require refuses IPv6 VIPs)
        self.joined: list[Any] = []

    def fileno(self) -> int:
        return self._r

    def filenos(self) -> list[int]:
        return [self._r]

    def require(self, ip) -> None:
        if ip.version == 6 and not self.ipv6:  # InterfaceTransport.require's refusal
            from vip_sidecar.transport import TransportError

            raise TransportError(f"interface {self.ifname}: no IPv6 socket: not supported")

    def join(self, group) -> None:
        self.joined.append(group)

    def receive(self, limit: int = 64) -> list:
        return []

    def take_kernel_drops(self) -> int:
        n, self.kernel_drops = self.kernel_drops, 0
        return n

    def send_multicast(
        self, packet: bytes, vhid: int, group, *, broadcast: bool, real_mac: bool
    ) -> None:
        self.sent.append(("mcast", packet))

    def send_unicast(self, packet: bytes, dst) -> None:
        self.sent.append((f"unicast:{dst}", packet))

    def send_ipv6(self, payload: bytes, src, dst) -> None:
        self.sent.append((f"ipv6:{dst}", payload))

    def announce(self, addr) -> None:
        self.sent.append(("announce", addr.packed))

    def close(self) -> None:
        import os

        os.close(self._r)
        os.close(self._w)


@contextmanager
def started_runtime(cfg: Any) -> Iterator[Any]:
    """A Runtime over FakeTransports, started on a loop of its own for synchronous tests
    (the receive-path fixtures), shut down and its loop closed afterwards."""
    from vip_sidecar.runtime import Runtime

    loop = asyncio.new_event_loop()
    rt = Runtime(cfg, {}, transport_factory=FakeTransport, handle_signals=False)
    loop.run_until_complete(rt.start())
    try:
        yield rt
    finally:
        loop.run_until_complete(rt.shutdown())
        loop.close()
