"""Loss, partition and replay, on real namespaces (issue: benchmarks and reliability)."""

import signal
import threading
import time

import pytest

from tests.integration.harness import NETNS, Sniffer, inject_frame, wait_for
from vip_sidecar import carp

pytestmark = [NETNS, pytest.mark.netns]
PW = ("-p", "secret", "-v", "21")


class StateSampler(threading.Thread):
    """Polls both nodes every 50 ms and accumulates time with 0 / 1 / 2 masters."""

    def __init__(self, nodes, period=0.05):
        super().__init__(daemon=True)
        self.nodes, self.period = nodes, period
        self.samples: list[tuple[float, int]] = []
        self._stop_evt = threading.Event()

    def run(self):
        while not self._stop_evt.is_set():
            t = time.monotonic()
            masters = sum(1 for n in self.nodes if n.state() == "MASTER")
            self.samples.append((t, masters))
            time.sleep(self.period)

    def stop(self):
        self._stop_evt.set()
        self.join(5)

    def seconds(self, since, until, count):
        total = 0.0
        for (t0, m), (t1, _) in zip(self.samples, self.samples[1:], strict=False):
            if since <= t0 < until and m == count:
                total += t1 - t0
        return total


def test_loss_partition_and_heal(make_topo):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "-k", "0")
    b = topo.sidecar(h2, *PW, "-a", topo.vip(), "-k", "50")
    wait_for(lambda: a.state() == "MASTER" and b.state() == "BACKUP", 8, what="steady state")
    sampler = StateSampler([a, b])
    sampler.start()
    try:
        t_loss = time.monotonic()
        topo.carp_loss(30)
        time.sleep(20)
        t_part = time.monotonic()
        topo.carp_loss(100)
        time.sleep(5)
        t_heal = time.monotonic()
        topo.carp_loss(0)
        healed = wait_for(
            lambda: (a.state(), b.state()) == ("MASTER", "BACKUP"), 5, what="one master after heal"
        )
        t_one = time.monotonic()
        time.sleep(2)
    finally:
        sampler.stop()
    report = {
        "30% loss": (sampler.seconds(t_loss, t_part, 2), sampler.seconds(t_loss, t_part, 0)),
        "100% loss": (sampler.seconds(t_part, t_heal, 2), sampler.seconds(t_part, t_heal, 0)),
        "healed": (sampler.seconds(t_one, 1e18, 2), sampler.seconds(t_one, 1e18, 0)),
    }
    print("\nphase        two-masters(s)  zero-masters(s)")
    for phase, (two, zero) in report.items():
        print(f"{phase:12} {two:14.2f}  {zero:15.2f}")
    print(f"heal -> exactly one master after {t_one - t_heal:.3f}s")
    offset = time.time() - time.monotonic()
    for name, node in (("a", a), ("b", b)):
        for ts, new, reason in node.transitions():
            print(f"  {name} {ts - offset - t_part:+8.3f}s (vs partition) -> {new} ({reason})")
    assert healed
    assert t_one - t_heal <= 2 * 1.0 + 0.3  # two intervals of the master (plus sampling)
    assert report["100% loss"][0] >= 5 - 3.5 - 0.5  # b claims once its dead interval passes
    for phase, (_, zero) in report.items():
        assert zero <= 0.2, f"{phase}: {zero:.2f}s without any master"
    assert report["healed"][0] == 0
    assert a.alive() and b.alive()


@pytest.mark.parametrize("protection", [True, False])
def test_replayed_advert_with_stale_counter(make_topo, protection):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    extra = ("--replay-protection",) if protection else ()
    sniff = Sniffer(topo, h3, 0x0800)
    b = topo.sidecar(h2, *PW, "-a", topo.vip(), "-k", "0", *extra)
    wait_for(lambda: b.state() == "MASTER", 6, what="b MASTER")
    a = topo.sidecar(h1, *PW, "-a", topo.vip(), "-k", "50", *extra)
    time.sleep(1.5)
    frames = [
        f
        for _, f in sniff.frames()
        if len(f) >= 70 and f[14 + 9] == 112 and f[26:30] == bytes(map(int, h2.ip.split(".")))
    ]
    assert len(frames) >= 2
    captured = frames[0]
    b.signal(signal.SIGTERM)  # bow-out: a takes over, having seen b's newer counters
    wait_for(lambda: a.state() == "MASTER", 3, what="a MASTER")
    time.sleep(1.0)
    # the captured advert (advskew 0 beats a's 50) is replayed later, counter now stale
    pkt = carp.decode_ip(captured[14:])
    assert isinstance(pkt, carp.Packet) and pkt.adv.advskew == 0
    inject_frame(h3, captured)
    time.sleep(0.5)
    vip = a.vip()
    if protection:
        assert vip["state"] == "MASTER"
        assert vip["counters"]["drops"].get("replay") == 1
    else:
        assert vip["state"] == "BACKUP" and vip["last_reason"] == "preferred_master"
        assert "replay" not in vip["counters"]["drops"]
