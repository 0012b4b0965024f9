"""One small aiohttp server: /healthz /readyz /status /metrics (TCP and/or unix socket)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from vip_sidecar import parsing, unixsock
from vip_sidecar.log import RateLimitedWarnings

if TYPE_CHECKING:
    from vip_sidecar.instance import VipInstance
    from vip_sidecar.runtime import Runtime

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")
_denied = RateLimitedWarnings()


async def healthz(request: web.Request) -> web.Response:
    ok, why = request.app[RUNTIME_KEY].healthy()
    return web.Response(status=200 if ok else 503, text=why + "\n")


async def readyz(request: web.Request) -> web.Response:
    ok, why = request.app[RUNTIME_KEY].ready()
    return web.Response(status=200 if ok else 503, text=why + "\n")


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME_KEY].status())


async def metrics(request: web.Request) -> web.Response:
    from vip_sidecar.metrics import render

    body = render(request.app[RUNTIME_KEY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def _control_targets(request: web.Request) -> list[VipInstance]:
    """The VIPs a control request names; control changes state, so it is served over the
    unix socket only (its file mode is the ACL), never over TCP."""
    transport = request.transport
    if not isinstance(transport and transport.get_extra_info("sockname"), str):
        raise web.HTTPForbidden(text="control endpoints answer on the unix status socket only\n")
    # the file mode lets readers of /status in; changing state takes root, the daemon's
    # user or status_socket_group, checked on the kernel's word (SO_PEERCRED)
    group = request.app[RUNTIME_KEY].config.status_socket_group
    peer = unixsock.peer_credentials(transport and transport.get_extra_info("socket"))
    if not unixsock.may_control(peer, group):
        who = f"uid {peer.uid} gid {peer.gid} pid {peer.pid}" if peer else "an unknown peer"
        _denied.warn(
            "control",
            f"control request from {who} refused: not root, this user or the socket's group",
            event="control_denied",
        )
        raise web.HTTPForbidden(
            text=f"control needs root, uid {os.geteuid()}"
            + (f" or group {group}" if group is not None else "")
            + f"; you are {who}\n"
        )
    name = request.match_info.get("vip", "")
    chosen = [i for i in request.app[RUNTIME_KEY].instances if name in ("", "all", i.cfg.name)]
    if not chosen:
        raise web.HTTPNotFound(text=f"no VIP named {name!r}\n")
    return chosen


async def demote(request: web.Request) -> web.Response:
    targets = _control_targets(request)
    try:
        hold = parsing.number(0.0, 86400.0, unit="seconds")(request.query.get("hold", "10"))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"hold: {exc}\n") from None
    done = {i.cfg.name: i.operator_demote(hold) for i in targets}
    return web.json_response({"demoted": done, "hold_s": hold})


async def maintenance(request: web.Request) -> web.Response:
    targets = _control_targets(request)
    on = request.match_info["switch"] == "on"
    for inst in targets:
        inst.set_maintenance(on)
    return web.json_response({"maintenance": on, "vips": [i.cfg.name for i in targets]})


async def reload(request: web.Request) -> web.Response:
    _control_targets(request)  # the ACL of every control request
    reloader = request.app[RUNTIME_KEY].reloader
    if reloader is None:
        raise web.HTTPNotImplemented(text="this daemon was not started with a reloadable config\n")
    from vip_sidecar.reload import ReloadRejected

    try:
        return web.json_response(await reloader.reload())
    except ReloadRejected as exc:
        raise web.HTTPBadRequest(text=f"reload rejected, running config kept: {exc}\n") from None


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/v1/vips/{vip}/demote", demote)
    app.router.add_post("/v1/vips/{vip}/maintenance/{switch:on|off}", maintenance)
    app.router.add_post("/v1/reload", reload)
    return app


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"http: must be HOST:PORT or unix:/path, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_server(runtime: Runtime, sockets: Sequence[socket.socket]) -> web.AppRunner:
    """Serve on sockets bound before start-up (launch.open_everything: unix ones with their
    mode by vip_sidecar.unixsock.bind, TCP on HOST:PORT), so binding problems are config
    errors and not failures after the daemon has begun to log."""
    runner = web.AppRunner(make_app(runtime), access_log=None)
    await runner.setup()
    for sock in sockets:
        await web.SockSite(runner, sock).start()
    return runner
