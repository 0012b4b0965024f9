"""systemd's notify protocol, natively: one datagram per message to $NOTIFY_SOCKET.

No libsystemd binding: the protocol is a `KEY=VALUE\\n` datagram on an AF_UNIX socket
whose path is in $NOTIFY_SOCKET (a leading '@' means a Linux abstract name). Outside
systemd (no variable) every call is a no-op, so the daemon runs the same everywhere.

`SystemdBridge` ties it to a Runtime: READY=1 once the sockets are open and each VIP
has a state, STATUS= with each VIP's state whenever it changes, WATCHDOG=1 only while
`Runtime.healthy()` holds (the /healthz condition), RELOADING=1 around a reload and
STOPPING=1 at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from vip_sidecar.log import event

if TYPE_CHECKING:
    from vip_sidecar.runtime import Runtime

# ping this many times per WatchdogSec: one lost or late ping must not kill the service
PINGS_PER_INTERVAL = 3
STATUS_MAX = 1024  # systemctl shows one line; keep the datagram small


def socket_address(value: str) -> str | bytes:
    """$NOTIFY_SOCKET as an AF_UNIX address: '@name' is the abstract name '\\0name'."""
    if value.startswith("@"):
        return b"\0" + os.fsencode(value[1:])
    return value


class Notifier:
    """Sends notify messages; silent no-op when not started by systemd (or the socket
    is gone: a failed notification must never take the daemon down)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        target = env.get("NOTIFY_SOCKET", "")
        self.address: str | bytes | None = (
            socket_address(target) if target.startswith(("/", "@")) else None
        )
        self.watchdog_s = _watchdog_interval(env)
        self.errors = 0
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        if self.address is None:
            return False
        payload = "\n".join(lines).encode()
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto(payload, self.address)
        except OSError as exc:
            self.errors += 1
            if self.errors == 1 or self.errors % 100 == 0:
                event(
                    logging.WARNING,
                    f"sd_notify to {os.fsdecode(self.address)!r} failed: {exc.strerror or exc}",
                    event="sd_notify_error",
                    errors=self.errors,
                )
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """WatchdogSec= as seconds, if it is meant for this process (WATCHDOG_PID, when set,
    names the main PID: a child that inherited the variables must not ping)."""
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


def status_line(runtime: Runtime) -> str:
    """`web MASTER, db BACKUP (maintenance)`: what `systemctl status` shows."""
    parts = []
    for inst in runtime.instances:
        text = f"{inst.cfg.name} {inst.election.state.name}"
        if inst.election.maintenance:
            text += " (maintenance)"
        parts.append(text)
    ok, why = runtime.healthy()
    line = ", ".join(parts) or "no VIPs"
    if not ok:
        line += f"; unhealthy: {why}"
    return line[:STATUS_MAX]


class SystemdBridge:
    """The Runtime's side of the notify protocol. `tick()` does one round (status
    change, watchdog ping); the task runs it every `period` seconds on the event loop,
    so a stalled loop sends nothing and systemd's watchdog fires."""

    def __init__(
        self,
        runtime: Runtime,
        notifier: Notifier | None = None,
        status: Callable[[Runtime], str] = status_line,
    ) -> None:
        self.runtime = runtime
        self.notifier = notifier or Notifier()
        self._status = status
        self._last_status: str | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def period(self) -> float:
        wd = self.notifier.watchdog_s
        return min(1.0, wd / PINGS_PER_INTERVAL) if wd else 1.0

    def started(self) -> None:
        """Sockets open, every VIP in its first state: tell systemd we are up."""
        if not self.notifier.enabled:
            return
        self._last_status = self._status(self.runtime)
        self.notifier.send("READY=1", f"STATUS={self._last_status}", f"MAINPID={os.getpid()}")
        self._task = asyncio.ensure_future(self._loop())

    def tick(self) -> None:
        current = self._status(self.runtime)
        if current != self._last_status:
            self._last_status = current
            self.notifier.send(f"STATUS={current}")
        healthy = self.runtime.healthy()[0]
        if self.notifier.watchdog_s and healthy:
            self.notifier.send("WATCHDOG=1")

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.period)
            self.tick()

    def reloading(self) -> None:
        self.notifier.send("RELOADING=1", "STATUS=reloading configuration")

    def reloaded(self, error: str | None = None) -> None:
        self._last_status = self._status(self.runtime)
        extra = f"; reload rejected: {error}" if error else ""
        self.notifier.send("READY=1", f"STATUS={self._last_status}{extra}"[: STATUS_MAX + 7])

    def stopping(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.notifier.send("STOPPING=1", "STATUS=stopping: bowing out and running down actions")

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        self.notifier.close()
