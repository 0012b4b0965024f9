"""Type=notify + WatchdogSec against a real daemon in a netns, a listener standing in for
systemd on $NOTIFY_SOCKET (what PID 1 does with the messages is systemd's business)."""

import itertools
import json
import signal
import socket
import threading
import time

import pytest

from tests.integration.harness import NETNS, wait_for

pytestmark = [NETNS, pytest.mark.netns]


class NotifyListener:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, {key: value})
        self._stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.partition("=")[::2] for line in data.decode().splitlines())
            self.messages.append((time.monotonic(), fields))

    @property
    def env(self):
        """What systemd puts in the service's environment."""
        return {"NOTIFY_SOCKET": self.sock.getsockname()}

    def with_key(self, key):
        return [(t, m) for t, m in self.messages if key in m]

    def close(self):
        self._stop = True
        self.thread.join(2)
        self.sock.close()


def test_ready_status_watchdog_and_stopping_from_a_real_daemon(make_topo):
    topo = make_topo(1)
    (h1,) = topo.hosts
    block = topo.workdir / "block"
    cfg = topo.workdir / "vips.json"
    cfg.write_text(
        json.dumps(
            {
                "pass": "secret",
                "vips": [
                    {
                        "name": "web",
                        "vhid": 41,
                        "addr": topo.vip(100),
                        "providers": [
                            {
                                "name": "tests.integration.testproviders",
                                "block_file": str(block),
                            }
                        ],
                    },
                    {"name": "db", "vhid": 42, "addr": topo.vip(101), "advskew": 10},
                ],
            }
        )
    )
    listener = NotifyListener(str(topo.workdir / "notify.sock"))
    try:
        env = {**listener.env, "WATCHDOG_USEC": "1500000"}
        node = topo.sidecar(h1, "--config", str(cfg), env=env)
        ready = wait_for(lambda: listener.with_key("READY"), 10, what="READY=1")
        first = ready[0][1]
        assert first["STATUS"] == "web BACKUP, db BACKUP"
        assert int(first["MAINPID"]) == node.pid  # `ip netns exec` execs, same pid
        # sockets are open by then: the status socket answers
        assert node.status() is not None
        wait_for(
            lambda: any(
                m["STATUS"] == "web MASTER, db MASTER" for _, m in listener.with_key("STATUS")
            ),
            10,
            what="STATUS with both VIPs MASTER",
        )
        time.sleep(2)
        pings = [t for t, _ in listener.with_key("WATCHDOG")]
        assert len(pings) >= 3
        steady_gap = max(b - a for a, b in itertools.pairwise(pings))
        assert steady_gap < 1.0  # WatchdogSec=1.5 s: pings every 0.5 s

        # wedge the event loop from inside (a provider check that blocks it for 4 s)
        n_before = len(pings)
        t_block = time.monotonic()
        block.write_text("4")
        wait_for(lambda: not block.exists(), 5, what="the provider to start blocking")
        time.sleep(5)
        pings = [t for t, _ in listener.with_key("WATCHDOG")]
        after = [t for t in pings if t > t_block]
        gap = max(b - a for a, b in zip(pings[n_before - 1 :], pings[n_before:], strict=False))
        print(
            f"\nwatchdog: steady gap {steady_gap:.2f}s, gap while the loop was blocked {gap:.2f}s"
        )
        # systemd (WatchdogSec=1.5) would have killed it: no ping for > 1.5 s
        assert gap >= 3.5
        assert after, "pings resume once the loop is free again"
        assert node.alive()

        node.signal(signal.SIGTERM)
        assert node.wait(15) == 0
        stopping = listener.with_key("STOPPING")
        assert len(stopping) == 1 and stopping[0][0] > ready[0][0]
        # and no watchdog ping after STOPPING=1
        assert all(t < stopping[0][0] for t in [t for t, _ in listener.with_key("WATCHDOG")])
    finally:
        listener.close()
