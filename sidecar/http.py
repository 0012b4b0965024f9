"""One small aiohttp server: /healthz /readyz /status /metrics (TCP and/or unix socket)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from sidecar.runtime import Runtime

RUNTIME_KEY: web.AppKey[Runtime] = web.AppKey("runtime")


async def healthz(request: web.Request) -> web.Response:
    ok, why = request.app[RUNTIME_KEY].healthy()
    return web.Response(status=200 if ok else 503, text=why + "\n")


async def readyz(request: web.Request) -> web.Response:
    ok, why = request.app[RUNTIME_KEY].ready()
    return web.Response(status=200 if ok else 503, text=why + "\n")


async def status(request: web.Request) -> web.Response:
    return web.json_response(request.app[RUNTIME_KEY].status())


async def metrics(request: web.Request) -> web.Response:
    from sidecar.metrics import render

    body = render(request.app[RUNTIME_KEY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


def make_app(runtime: Runtime) -> web.Application:
    app = web.Application()
    app[RUNTIME_KEY] = runtime
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/status", status)
    app.router.add_get("/metrics", metrics)
    return app


def split_address(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"http: must be HOST:PORT or unix:/path, got {address!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


async def start_server(
    runtime: Runtime, address: str | None, unix_path: str | None
) -> web.AppRunner:
    runner = web.AppRunner(make_app(runtime), access_log=None)
    await runner.setup()
    sites: list[web.BaseSite] = []
    for addr in (address, unix_path):
        if not addr:
            continue
        if addr.startswith("unix:") or addr.startswith("/"):
            sites.append(web.UnixSite(runner, addr.removeprefix("unix:")))
        else:
            host, port = split_address(addr)
            sites.append(web.TCPSite(runner, host, port))
    for site in sites:
        await site.start()
    return runner
