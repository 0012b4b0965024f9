"""A fault-injecting HTTPS reverse proxy in front of the real kube-apiserver.

The counterpart of the moto wrapper: clients talk TLS to the proxy (a certificate from the
test CA for the address it listens on), the proxy forwards every request unchanged to the
apiserver, except while a fault is set:

* ``status``: answer ``code`` (500, 503, 429, ...) with a Kubernetes Status body, and
  ``Retry-After`` when given;
* ``slow``: forward after ``delay`` seconds; ``late``: forward at once, answer ``delay``
  seconds later (two clients then read the same state and write after it);
* ``hang``: hold the request until the fault is cleared (or the client gives up);
* ``reset``: drop the TCP connection without an answer;
* ``refuse``: stop listening (connection refused), until cleared.

``count`` limits a fault to the next N requests (then it clears itself); ``match`` limits
it to paths containing a string. It runs its own event loop in a thread, so tests that use
it can be plain synchronous tests.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "content-length",
       "proxy-connection", "te", "trailer"}


@dataclass
class Fault:
    kind: str  # status | slow | late | hang | reset | refuse
    code: int = 503
    delay: float = 0.0
    retry_after: float | None = None
    count: int | None = None
    match: str = ""
    method: str = ""  # only requests with this method (e.g. "GET"), all when empty


class FaultProxy:
    def __init__(self, upstream: str, ca_file: Path, cert: tuple[Path, Path], host: str,
                 port: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.host, self.port = host, port
        self._ca, self._cert = ca_file, cert
        self.fault: Fault | None = None
        self.seen = 0  # requests received
        self.injected = 0  # requests answered by a fault
        self._loop = asyncio.new_event_loop()
        self._released = asyncio.Event()
        self._site: web.TCPSite | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    # ---------------------------------------------------------------- control (any thread)
    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._start())
        return self

    def set(self, kind: str | None, **kw: Any) -> None:
        """Set (or with None clear) the fault; thread-safe."""
        self._run(self._set(Fault(kind, **kw) if kind else None))

    def stop(self) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(15)

    # ---------------------------------------------------------------- in the loop
    async def _start(self) -> None:
        ctx = ssl.create_default_context(cafile=str(self._ca))
        self._client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ctx), auto_decompress=False,
            timeout=aiohttp.ClientTimeout(total=60))
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ssl.load_cert_chain(str(self._cert[0]), str(self._cert[1]))
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await self._listen()

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, self.host, self.port, ssl_context=self._server_ssl,
                                 reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _set(self, fault: Fault | None) -> None:
        was = self.fault
        self.fault = fault
        self._released.set()
        self._released = asyncio.Event()
        if fault and fault.kind == "refuse" and self._site is not None:
            await self._site.stop()
            self._site = None
            # kept-alive connections would still be served: a refusing server has none
            for transport in self._transports:
                transport.abort()
            self._transports.clear()
        if (fault is None or fault.kind != "refuse") and was and was.kind == "refuse":
            await self._listen()

    async def _stop(self) -> None:
        self._released.set()
        await self._runner.cleanup()
        await self._client.close()

    def _take(self, method: str, path: str) -> Fault | None:
        f = self.fault
        if f is None or (f.match and f.match not in path) or (f.method and f.method != method):
            return None
        if f.count is not None:
            f.count -= 1
            if f.count <= 0:
                self.fault = None
        self.injected += 1
        return f

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen += 1
        if request.transport is not None:
            self._transports.add(request.transport)
        fault = self._take(request.method, request.path_qs)
        if fault is not None:
            if fault.kind == "status":
                headers = {}
                if fault.retry_after is not None:
                    headers["Retry-After"] = str(int(fault.retry_after))
                body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": f"injected {fault.code}", "code": fault.code,
                        "reason": "TooManyRequests" if fault.code == 429 else "InternalError"}
                return web.Response(status=fault.code, text=json.dumps(body), headers=headers,
                                    content_type="application/json")
            if fault.kind == "reset":
                if request.transport is not None:
                    request.transport.abort()
                raise asyncio.CancelledError
            if fault.kind == "hang":
                await self._released.wait()
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay)
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        # never add a Content-Type the client did not send: the kubernetes client sends
        # none on creates, and the apiserver then reads JSON (octet-stream would be a 415)
        async with self._client.request(request.method, self.upstream + request.path_qs,
                                        data=body or None, headers=headers,
                                        skip_auto_headers=("Content-Type",)) as up:
            data = await up.read()
            out = {k: v for k, v in up.headers.items() if k.lower() not in HOP}
        if fault is not None and fault.kind == "late":
            await asyncio.sleep(fault.delay)
        return web.Response(status=up.status, body=data, headers=out)
