"""`vip-sidecar run` and `check`: the configuration and providers through the one config
path (also what a reload reads), then for `run` acquire what the host can refuse
(sockets, the raw CARP sockets) before the first log line, daemonize like ucarp -B,
set up logging, start the runtime and its HTTP server."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from vip_sidecar import sources, unixsock
from vip_sidecar.config import Config, ConfigError
from vip_sidecar.log import event, setup
from vip_sidecar.unixsock import BoundSocket

if TYPE_CHECKING:
    from vip_sidecar.providers.base import Provider
    from vip_sidecar.reload import Loader

EXIT_CONFIG = 2


class StartupError(RuntimeError):
    """The environment refused something the config asked for (port in use...)."""


def configure(
    request: sources.ConfigRequest, environ: Mapping[str, str]
) -> tuple[Config, dict[str, list[Provider]]]:
    """The config (sources.assemble) and its providers, built and option-checked
    (raises ConfigError or ValueError)."""
    config = sources.assemble(request, environ)
    from vip_sidecar.runtime import build_providers

    return config, build_providers(config)


def reloader(request: sources.ConfigRequest, environ: Mapping[str, str]) -> Loader:
    """`ctl reload`: the same request and environment, read again through the same path,
    and the host checked as at start-up."""

    def load() -> tuple[Config, dict[str, list[Provider]]]:
        from vip_sidecar.preflight import check_host

        config, providers = configure(request, environ)
        check_host(config)
        return config, providers

    return load


@dataclasses.dataclass
class Opened:
    """What run() needs from the host, acquired before the first log line so that a
    refusal (socket path, port in use, no CAP_NET_RAW) is one line and exit 2."""

    unix: list[BoundSocket] = dataclasses.field(default_factory=list)
    tcp: socket.socket | None = None
    transports: dict[str, Any] = dataclasses.field(default_factory=dict)

    def transport_factory(self, ifname: str) -> Any:
        # the pre-opened sockets first; a re-created interface gets new ones later
        from vip_sidecar.transport import InterfaceTransport

        return self.transports.pop(ifname, None) or InterfaceTransport(ifname)


def open_everything(config: Config) -> Opened:
    from vip_sidecar.transport import InterfaceTransport, TransportError

    opened = Opened(unix=bind_unix_sockets(config))
    try:
        if config.http and not config.http.startswith(("unix:", "/")):
            opened.tcp = bind_tcp(config.http)
        for vip in config.vips:
            if vip.interface not in opened.transports:
                opened.transports[vip.interface] = InterfaceTransport(vip.interface)
            opened.transports[vip.interface].require(vip.addr)  # IPv6 VIP, no IPv6: one line
    except (ConfigError, TransportError) as exc:
        for bound in opened.unix:
            bound.sock.close()
            bound.remove()
        for transport in opened.transports.values():
            transport.close()
        if isinstance(exc, ConfigError):
            raise
        raise StartupError(str(exc)) from None
    return opened


def bind_tcp(address: str) -> socket.socket:
    from vip_sidecar.http import split_address

    host, port = split_address(address)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError("http", f"cannot listen on {address}: {why}") from None


def bind_unix_sockets(config: Config) -> list[BoundSocket]:
    """The unix sockets of --status-socket and --http unix:PATH, bound with their mode."""
    bound: list[BoundSocket] = []
    for field_name, value in (("http", config.http), ("status_socket", config.status_socket)):
        if value and (value.startswith("unix:") or value.startswith("/")):
            try:
                bound.append(unixsock.bind(value.removeprefix("unix:"), config.status_socket_group))
            except unixsock.SocketPathError as exc:
                for done in bound:
                    done.sock.close()
                    done.remove()
                raise ConfigError(field_name, str(exc)) from None
    return bound


def run(
    config: Config,
    providers: dict[str, Any],
    opened: Opened | None = None,
    reload_config: Loader | None = None,
) -> int:
    opened = opened or Opened()
    if config.daemonize:
        daemonize()
    for warning in setup(
        log_format=config.log_format,
        debug=config.debug,
        facility=config.facility,
        to_terminal=not config.daemonize,
        syslog_socket=config.syslog_socket,
    ):
        event(logging.ERROR, warning)
    for warning in config.warnings:
        event(logging.WARNING, f"Warning: {warning}", event="config_warning")
    for vip in config.vips:
        if not vip.upscript and not any(p.name != "script" for p in vip.providers):
            event(logging.WARNING, "Warning: no script called when going up", vip=vip.name)
        if not vip.downscript and not any(p.name != "script" for p in vip.providers):
            event(logging.WARNING, "Warning: no script called when going down", vip=vip.name)
    from vip_sidecar.runtime import Runtime
    from vip_sidecar.transport import TransportError

    async def main_async() -> int:
        runtime = Runtime(config, providers, transport_factory=opened.transport_factory)
        if reload_config is not None:
            from vip_sidecar.reload import Reloader

            runtime.reloader = Reloader(runtime, reload_config)
        server = None
        listening = [b.sock for b in opened.unix] + ([opened.tcp] if opened.tcp else [])
        if listening:
            from vip_sidecar.http import start_server

            try:
                server = await start_server(runtime, listening)
            except (OSError, ValueError, OverflowError) as exc:
                raise StartupError(f"http: cannot serve: {exc}") from None
        try:
            await runtime.run()
        finally:
            if server is not None:
                await server.cleanup()
        return 0

    try:
        return asyncio.run(main_async())
    except (TransportError, StartupError) as exc:
        # one line: the log goes to stderr already (or to syslog when daemonized)
        event(logging.ERROR, str(exc), event="fatal")
        return EXIT_CONFIG


def daemonize() -> None:
    """ucarp -B: double fork, new session, cwd /, stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
