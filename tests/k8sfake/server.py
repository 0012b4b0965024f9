"""A fake Kubernetes apiserver over HTTP(S) for the provider's tests.

TEST DOUBLE: no kube-apiserver can be installed on the test machines (Debian and PyPI
package only the clients), so the tests run the real `kubernetes` client against this
server, reached through an ordinary kubeconfig. It implements exactly the endpoints the
provider uses (see providers/k8s_api.API_CALLS):

    GET/POST/PUT  /apis/coordination.k8s.io/v1/namespaces/{ns}/leases[/{name}]
    GET/PATCH     /api/v1/namespaces/{ns}/pods/{name}
    GET/PATCH     /api/v1/nodes/{name}
    POST          /api/v1/namespaces/{ns}/events
    PATCH         /api/v1/namespaces/{ns}/events/{name}

with bearer-token users, a configurable 403 per (group, resource, verb), `dryRun=All`,
and switches for outages: refuse connections, hang, or answer 503. Every request is
logged with the RBAC triple it needs, so tests can compare what the provider really
did with what the chart grants. Anything else is answered 404/405 and recorded in
`unexpected`.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.k8sfake.store import ApiError, Key, Store

ROUTES = [
    (re.compile(r"^/apis/(coordination\.k8s\.io)/v1/namespaces/([^/]+)/(leases)(?:/([^/]+))?$"),
     True),
    (re.compile(r"^/api/v1/namespaces/([^/]+)/(pods|events)(?:/([^/]+))?$"), True),
    (re.compile(r"^/api/v1/(nodes)(?:/([^/]+))?$"), False),
]
PATCH_TYPES = ("application/merge-patch+json", "application/strategic-merge-patch+json")
HANG_MAX_S = 120.0  # a hung handler gives up by itself so no thread outlives a test


@dataclass
class Request:
    at: float
    method: str
    path: str
    group: str
    resource: str
    verb: str
    namespace: str
    name: str
    user: str
    status: int
    content_type: str = ""
    dry_run: bool = False

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


class _Httpd(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    fake: FakeApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Httpd

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is the record; stderr noise would hide test output

    def do_GET(self) -> None:
        self.server.fake._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._handle(self, "POST")

    def do_PUT(self) -> None:
        self.server.fake._handle(self, "PUT")

    def do_PATCH(self) -> None:
        self.server.fake._handle(self, "PATCH")

    def do_DELETE(self) -> None:
        self.server.fake._handle(self, "DELETE")


class FakeApiServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *,
                 tokens: dict[str, str] | None = None,
                 tls: tuple[str, str] | None = None) -> None:
        self.host = host
        self.port = port
        self.tokens = tokens if tokens is not None else {"test-token": "system:serviceaccount"}
        self.tls = tls
        self.store = Store()
        self.requests: list[Request] = []
        self.unexpected: list[Request] = []
        #: (group, resource, verb) answered 403 for every user
        self.deny: set[tuple[str, str, str]] = set()
        #: extra seconds before every answer (to measure what latency costs)
        self.delay_s = 0.0
        self.outage: str | None = None  # None | "refuse" | "hang" | "error"
        self._outage_code = 503
        self._released = threading.Event()
        self._released.set()
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._httpd: _Httpd | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> FakeApiServer:
        httpd = _Httpd((self.host, self.port), _Handler)
        httpd.fake = self
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(*self.tls)
            httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
        self.port = httpd.server_address[1]
        orig_get_request = httpd.get_request

        def get_request() -> tuple[socket.socket, Any]:
            conn, addr = orig_get_request()
            # headers and body go out as two writes: without NODELAY, Nagle plus the
            # client's delayed ACK add 40 ms to every call and distort timings
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._conns.add(conn)
            return conn, addr

        httpd.get_request = get_request  # type: ignore[method-assign]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True, name=f"k8sfake:{self.port}")
        self._thread.start()
        return self

    def _close_listener(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # established keep-alive connections die with the "apiserver"
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def stop(self) -> None:
        self._released.set()
        self._close_listener()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- outage switches -------------------------------------------------------------
    def set_outage(self, mode: str | None, code: int = 503) -> None:
        """'refuse': nothing listens (connection refused); 'hang': requests are read and
        never answered; 'error': every request gets `code`; None: healthy again."""
        if mode not in (None, "refuse", "hang", "error"):
            raise ValueError(mode)
        previous = self.outage
        self.outage = mode
        self._outage_code = code
        if mode == "hang":
            self._released.clear()
        else:
            self._released.set()
        if mode == "refuse" and previous != "refuse":
            self._close_listener()
        elif mode != "refuse" and previous == "refuse":
            self.start()

    # -- kubeconfig ------------------------------------------------------------------
    def kubeconfig(self, path: Path | str, *, token: str = "test-token",
                   namespace: str | None = None, ca_file: str | None = None) -> str:
        cluster: dict[str, Any] = {"server": self.url}
        if ca_file:
            cluster["certificate-authority"] = ca_file
        context: dict[str, Any] = {"cluster": "fake", "user": "fake"}
        if namespace:
            context["namespace"] = namespace
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": cluster}],
            "users": [{"name": "fake", "user": {"token": token}}],
            "contexts": [{"name": "fake", "context": context}],
            "current-context": "fake",
        }
        Path(path).write_text(json.dumps(doc))
        return str(path)

    # -- convenience for tests -------------------------------------------------------
    def add_pod(self, namespace: str, name: str, node: str = "",
                labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.store.put("", "pods", namespace, name, {
            "metadata": {"labels": dict(labels or {})},
            "spec": {"nodeName": node},
        })

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.store.put("", "nodes", "", name, {"metadata": {"labels": dict(labels or {})}})

    def lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.store.peek("coordination.k8s.io", "leases", namespace, name)

    def holder(self, namespace: str, name: str) -> str | None:
        lease = self.lease(namespace, name)
        return ((lease or {}).get("spec") or {}).get("holderIdentity") or None

    def pod_labels(self, namespace: str, name: str) -> dict[str, str]:
        pod = self.store.peek("", "pods", namespace, name) or {}
        return dict((pod.get("metadata") or {}).get("labels") or {})

    def node_labels(self, name: str) -> dict[str, str]:
        node = self.store.peek("", "nodes", "", name) or {}
        return dict((node.get("metadata") or {}).get("labels") or {})

    def events(self, namespace: str) -> list[dict[str, Any]]:
        evs = self.store.list("", "events", namespace)
        return sorted(evs, key=lambda e: e["metadata"]["resourceVersion"].zfill(12))

    def triples(self, *, ok_only: bool = False) -> set[tuple[str, str, str]]:
        with self._lock:
            return {r.triple for r in self.requests if not ok_only or r.status < 300}

    # -- request handling --------------------------------------------------------------
    def _route(self, method: str, path: str) -> tuple[str, str, str, str, str] | None:
        for pattern, namespaced in ROUTES:
            m = pattern.match(path)
            if not m:
                continue
            if pattern.pattern.startswith("^/apis/"):
                group, ns, resource, name = m.group(1), m.group(2), m.group(3), m.group(4) or ""
            elif namespaced:
                group, ns, resource, name = "", m.group(1), m.group(2), m.group(3) or ""
            else:
                group, ns, resource, name = "", "", m.group(1), m.group(2) or ""
            verb = {
                "GET": "get" if name else "list",
                "POST": "create",
                "PUT": "update",
                "PATCH": "patch",
                "DELETE": "delete",
            }[method]
            return group, resource, ns, name, verb
        return None

    def _handle(self, h: _Handler, method: str) -> None:
        start = time.monotonic()
        split = urlsplit(h.path)
        query = parse_qs(split.query)
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length else b""
        if self.outage == "hang":
            self._released.wait(HANG_MAX_S)
            h.close_connection = True
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        user = self._user(h)
        routed = self._route(method, split.path)
        group, resource, ns, name, verb = routed or ("", "", "", "", method.lower())
        ctype = (h.headers.get("Content-Type") or "").split(";")[0].strip()
        dry_run = query.get("dryRun", [""])[0] == "All"
        try:
            if self.outage == "error":
                raise ApiError(self._outage_code, "ServiceUnavailable",
                               "etcdserver: request timed out (fake outage)")
            if user is None:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if routed is None:
                raise ApiError(404, "NotFound", f"the server could not find {split.path}")
            if (group, resource, verb) in self.deny:
                where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
                raise ApiError(403, "Forbidden",
                               f'{resource} "{name}" is forbidden: User "{user}" cannot {verb} '
                               f'resource "{resource}" in API group "{group}"{where}')
            if "watch" in query or verb in ("list", "delete"):
                raise ApiError(405, "MethodNotAllowed", f"{verb} is not implemented by the fake")
            body = json.loads(raw) if raw else None
            result = self._dispatch(group, resource, ns, name, verb, body, ctype, dry_run, user)
            status, payload = (201 if verb == "create" else 200), result
        except ApiError as exc:
            status, payload = exc.code, exc.status()
        except json.JSONDecodeError as exc:
            status, payload = 400, ApiError(400, "BadRequest", f"bad JSON: {exc}").status()
        rec = Request(time.time(), method, split.path, group, resource, verb, ns, name,
                      user or "", status, ctype, dry_run)
        with self._lock:
            self.requests.append(rec)
            if routed is None or (status in (404, 405, 415) and verb != "get"):
                self.unexpected.append(rec)
        data = json.dumps(payload).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.send_header("X-Fake-Duration", f"{time.monotonic() - start:.6f}")
            h.end_headers()
            h.wfile.write(data)
        except OSError:
            h.close_connection = True

    def _user(self, h: _Handler) -> str | None:
        auth = h.headers.get("Authorization") or ""
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self.tokens.get(token.strip())

    def _dispatch(self, group: str, resource: str, ns: str, name: str, verb: str,
                  body: Any, ctype: str, dry_run: bool, user: str) -> dict[str, Any]:
        store = self.store
        if verb == "get":
            return store.get((group, resource, ns, name))
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "request body must be a JSON object")
        if verb == "create":
            if name:
                raise ApiError(405, "MethodNotAllowed", "POST to a named resource")
            if resource not in ("leases", "events"):
                raise ApiError(405, "MethodNotAllowed", f"create {resource} not implemented")
            obj_name = (body.get("metadata") or {}).get("name") or ""
            key: Key = (group, resource, ns, obj_name)
            return store.create(key, body, dry_run=dry_run, user=user)
        key = (group, resource, ns, name)
        if verb == "update":
            if resource != "leases":
                raise ApiError(405, "MethodNotAllowed", f"update {resource} not implemented")
            return store.update(key, body, dry_run=dry_run, user=user)
        if verb == "patch":
            if resource not in ("pods", "nodes", "events"):
                raise ApiError(405, "MethodNotAllowed", f"patch {resource} not implemented")
            if ctype not in PATCH_TYPES:
                raise ApiError(415, "UnsupportedMediaType",
                               f"the fake only implements {', '.join(PATCH_TYPES)}, got {ctype!r}")
            return store.patch(key, body, dry_run=dry_run, user=user)
        raise ApiError(405, "MethodNotAllowed", verb)


def self_signed_cert(directory: Path, ip: str = "127.0.0.1") -> tuple[str, str]:
    """A throwaway CA-less server certificate with an IP SAN (for in-cluster tests)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "k8sfake")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "apiserver.crt", directory / "apiserver.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
