"""The native sd_notify client and the Runtime bridge (no systemd needed)."""

import os
import socket
from types import SimpleNamespace

import pytest

from vip_sidecar.election import State
from vip_sidecar.sdnotify import Notifier, SystemdBridge, socket_address, status_line


@pytest.fixture
def listener(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()


def recv_all(sock):
    out = []
    sock.setblocking(False)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except BlockingIOError:
        pass
    sock.settimeout(2)
    return out


def test_abstract_names_map_to_a_leading_nul():
    assert socket_address("@vs/notify") == b"\0vs/notify"
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"


def test_datagram_reaches_an_abstract_socket():
    name = f"vip-sidecar-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.enabled and n.send("READY=1", "STATUS=hello")
        assert sock.recv(4096) == b"READY=1\nSTATUS=hello"
        n.close()
    finally:
        sock.close()


def test_outside_systemd_every_call_is_a_no_op():
    n = Notifier({})
    assert not n.enabled and n.send("READY=1") is False and n.watchdog_s is None
    assert not Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled


def test_a_vanished_socket_is_counted_not_raised(tmp_path):
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.send("WATCHDOG=1") is False and n.send("WATCHDOG=1") is False
    assert n.errors == 2


def test_watchdog_interval_only_for_the_named_pid():
    assert Notifier({"WATCHDOG_USEC": "3000000"}).watchdog_s == 3.0
    mine = {"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_s == 3.0
    # a child that inherited its parent's variables must not ping for it
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "0"}).watchdog_s is None
    assert Notifier({"WATCHDOG_USEC": "junk"}).watchdog_s is None


class FakeRuntime:
    def __init__(self):
        self.health = (True, "ok")
        self.instances = [self._inst("web", State.MASTER), self._inst("db", State.BACKUP)]

    @staticmethod
    def _inst(name, state):
        return SimpleNamespace(
            cfg=SimpleNamespace(name=name),
            election=SimpleNamespace(state=state, maintenance=False),
        )

    def healthy(self):
        return self.health


def test_status_line_names_every_vip_and_an_unhealthy_reason():
    rt = FakeRuntime()
    assert status_line(rt) == "web MASTER, db BACKUP"
    rt.instances[1].election.maintenance = True
    rt.health = (False, "event loop stalled for 6.0s")
    assert status_line(rt) == (
        "web MASTER, db BACKUP (maintenance); unhealthy: event loop stalled for 6.0s"
    )


def test_watchdog_pings_only_while_healthy_and_status_only_on_change(listener):
    path, sock = listener
    rt = FakeRuntime()
    bridge = SystemdBridge(rt, Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1500000"}))
    assert bridge.period == 0.5
    bridge._last_status = status_line(rt)
    bridge.tick()
    bridge.tick()
    assert recv_all(sock) == ["WATCHDOG=1", "WATCHDOG=1"]
    rt.health = (False, "vhid1: no advertisement sent for 4.2s")
    bridge.tick()
    bridge.tick()
    # the status changes once (unhealthy reason) and no watchdog ping goes out
    assert recv_all(sock) == [
        "STATUS=web MASTER, db BACKUP; unhealthy: vhid1: no advertisement sent for 4.2s"
    ]
    rt.health = (True, "ok")
    rt.instances[0].election.state = State.BACKUP
    bridge.tick()
    assert recv_all(sock) == ["STATUS=web BACKUP, db BACKUP", "WATCHDOG=1"]


def test_reload_and_stop_messages(listener):
    path, sock = listener
    bridge = SystemdBridge(FakeRuntime(), Notifier({"NOTIFY_SOCKET": path}))
    bridge.reloading()
    bridge.reloaded("vips[1].vhid: must be an integer 1..255, got '300'")
    bridge.stopping()
    got = recv_all(sock)
    assert got[0].startswith("RELOADING=1\n")
    assert got[1] == (
        "READY=1\nSTATUS=web MASTER, db BACKUP; reload rejected: "
        "vips[1].vhid: must be an integer 1..255, got '300'"
    )
    assert got[2].startswith("STOPPING=1\n")
