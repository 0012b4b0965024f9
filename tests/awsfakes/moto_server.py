"""moto's HTTP server with a fault-injecting WSGI middleware in front of its dispatcher.

Faults are answered on the wire exactly like EC2 would (XML error bodies, real HTTP
status codes), so botocore's parser and retry handler see them as they would see AWS:
nothing inside boto3 is patched. Each fault can be limited to one action, one client
address (one sidecar node) and a number of occurrences.
"""

from __future__ import annotations

import io
import logging
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

StartResponse = Callable[..., Any]

ERROR_STATUS = {
    "throttle": ("503 Service Unavailable", "RequestLimitExceeded", "Request limit exceeded."),
    "5xx": ("500 Internal Server Error", "InternalError",
            "An internal error has occurred."),
    "unavailable": ("503 Service Unavailable", "Unavailable",
                    "The server is overloaded and can't handle the request."),
    "unauthorized": ("403 Forbidden", "UnauthorizedOperation",
                     "You are not authorized to perform this operation. Encoded authorization "
                     "failure message: AbCdEf0123456789"),
}


@dataclass
class Fault:
    action: str  # EC2 Action, or "*"
    kind: str  # throttle | 5xx | unavailable | unauthorized | delay
    count: int | None = 1  # None: every matching request
    client: str | None = None  # only requests from this address (one node)
    delay_s: float = 0.0
    hits: int = 0


@dataclass
class Request:
    at: float
    action: str
    client: str
    fault: str | None
    dry_run: bool
    params: dict[str, str]


@dataclass
class FaultInjector:
    app: Any
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, action: str, kind: str, count: int | None = 1, client: str | None = None,
            delay_s: float = 0.0) -> Fault:
        if kind not in ERROR_STATUS and kind != "delay":
            raise ValueError(kind)
        fault = Fault(action, kind, count, client, delay_s)
        with self.lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def calls(self, action: str, client: str | None = None, dry_run: bool | None = False
              ) -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.action == action
                    and (client is None or r.client == client)
                    and (dry_run is None or r.dry_run == dry_run)]

    def _match(self, action: str, client: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.action not in ("*", action):
                    continue
                if fault.client is not None and fault.client != client:
                    continue
                if fault.count is not None and fault.hits >= fault.count:
                    continue
                fault.hits += 1
                return fault
        return None

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        params = {k: v[0] for k, v in urllib.parse.parse_qs(body.decode(errors="replace")).items()}
        action = params.get("Action", "")
        client = str(environ.get("REMOTE_ADDR", ""))
        fault = self._match(action, client) if action else None
        with self.lock:
            self.requests.append(Request(time.time(), action, client,
                                         fault.kind if fault else None,
                                         params.get("DryRun") == "true", params))
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay_s)
        elif fault is not None:
            status, code, message = ERROR_STATUS[fault.kind]
            xml = (
                '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
                f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
                f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
            ).encode()
            start_response(status, [("Content-Type", "text/xml"),
                                    ("Content-Length", str(len(xml)))])
            return [xml]
        return self.app(environ, start_response)  # type: ignore[no-any-return]


class FaultyMoto:
    """moto[server] for EC2 on host:port (port 0 = pick one), faults in front."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.injector = FaultInjector(DomainDispatcherApplication(create_backend_app))
        self.server: BaseWSGIServer = make_server(
            host, port, self.injector, threaded=True, request_handler=MotoRequestHandler
        )
        self.host, self.port = str(self.server.server_address[0]), int(
            self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        req = urllib.request.Request(self.url + "/moto-api/reset", data=b"", method="POST")
        urllib.request.urlopen(req, timeout=10).close()
        self.injector.clear()
        with self.injector.lock:
            self.injector.requests.clear()

    def client(self, region: str = "eu-west-1") -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=region
        ).client("ec2", endpoint_url=self.url,
                 config=Config(retries={"mode": "standard", "total_max_attempts": 1}))

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
