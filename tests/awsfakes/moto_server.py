"""moto's HTTP server with a fault-injecting WSGI middleware in front of its dispatcher.

Faults are answered on the wire exactly like EC2 would (XML error bodies, real HTTP
status codes), so botocore's parser and retry handler see them as they would see AWS:
nothing inside boto3 is patched. Each fault can be limited to one action, one client
address (one sidecar node) and a number of occurrences.

Two opt-in layers make moto behave like real EC2 where the aws provider depends on it
(issue 17, docs/aws.md "What the lag model stands for"):
- aws_semantics: AssignPrivateIpAddresses with AllowReassignment *moves* the address
  (moto keeps it on both ENIs), AssignIpv6Addresses of an address another ENI holds is
  refused with InvalidIPAddress.InUse (moto lists it on both), and the
  `addresses.private-ip-address` / `ipv6-addresses.ipv6-address` / `tag-key` filters of
  DescribeNetworkInterfaces are evaluated here (moto: primaries only / not implemented).
- lag (WireLag): read-after-write lag. Each write (a move, a tag) records the state of
  what it touches; describes keep answering that old state for a seeded random window,
  each write independently, so a move and its tag become visible in either order.
"""

from __future__ import annotations

import copy
import io
import logging
import random
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server

from tests.awsfakes.ec2xml import (
    DESCRIBE_OF,
    ID_PARAM,
    ITEMS,
    WIRE_FILTERS,
    addresses,
    canonical,
    item_id,
    items,
    local,
    matches,
)

StartResponse = Callable[..., Any]

ERROR_STATUS = {
    "throttle": ("503 Service Unavailable", "RequestLimitExceeded", "Request limit exceeded."),
    "5xx": ("500 Internal Server Error", "InternalError",
            "An internal error has occurred."),
    "unavailable": ("503 Service Unavailable", "Unavailable",
                    "The server is overloaded and can't handle the request."),
    # EC2's refusal of an address another ENI holds (AssignIpv6Addresses has no steal flag)
    "in_use": ("400 Bad Request", "InvalidIPAddress.InUse", "The address is in use."),
    "unauthorized": ("403 Forbidden", "UnauthorizedOperation",
                     "You are not authorized to perform this operation. Encoded authorization "
                     "failure message: AbCdEf0123456789"),
}


@dataclass
class Fault:
    action: str  # EC2 Action, or "*"
    kind: str  # throttle | 5xx | unavailable | in_use | unauthorized | delay
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
class Hidden:
    resource: str
    aspect: str
    old: list[ET.Element]  # the aspect's elements before the write
    visible_at: float
    action: str


@dataclass
class WireLag:
    """Seeded read-after-write lag for describes answered to the clients in `clients`
    (None: every client except the test's own, `exempt`)."""

    max_s: float
    seed: int
    exempt: frozenset[str] = frozenset()
    clients: frozenset[str] | None = None
    rng: random.Random = field(init=False)
    hidden: list[Hidden] = field(default_factory=list)
    stale_answers: int = 0  # describes that showed at least one old aspect

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def applies(self, client: str) -> bool:
        if client in self.exempt:
            return False
        return self.clients is None or client in self.clients

    def settled_at(self) -> float:
        return max((h.visible_at for h in self.hidden), default=0.0)


@dataclass
class FaultInjector:
    app: Any
    faults: list[Fault] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    aws_semantics: bool = False
    lag: WireLag | None = None
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    _snap: dict[str, ET.Element] = field(default_factory=dict)  # under write_lock

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

    # -- EC2 semantics and read-after-write lag -------------------------------------------
    def _app(self, environ: dict[str, Any], pairs: list[tuple[str, str]]
             ) -> tuple[str, list[tuple[str, str]], bytes]:
        """Call moto with these form parameters (the caller's headers)."""
        body = urllib.parse.urlencode(pairs).encode()
        env = dict(environ)
        env["wsgi.input"] = io.BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        env["CONTENT_TYPE"] = "application/x-www-form-urlencoded; charset=utf-8"
        out: dict[str, Any] = {}

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            out["status"], out["headers"] = status, headers

        chunks = self.app(env, start)
        data = b"".join(chunks)
        if hasattr(chunks, "close"):
            chunks.close()
        return out["status"], out["headers"], data

    def _describe(self, environ: dict[str, Any], describe: str, ids: list[str]
                  ) -> dict[str, ET.Element]:
        pairs = [("Action", describe), ("Version", "2016-11-15")]
        pairs += [(f"{ID_PARAM[describe]}.{i}", r) for i, r in enumerate(ids, 1)]
        status, _, data = self._app(environ, pairs)
        if not status.startswith("200"):
            return {}
        root = ET.fromstring(data)
        return {item_id(item, describe): item for item in items(root, describe)}

    def _holders(self, environ: dict[str, Any], ip: str) -> list[str]:
        _, _, data = self._app(environ, [("Action", "DescribeNetworkInterfaces"),
                                         ("Version", "2016-11-15")])
        version = 6 if ":" in ip else 4
        want = canonical(ip)
        return [item_id(item, "DescribeNetworkInterfaces")
                for item in items(ET.fromstring(data), "DescribeNetworkInterfaces")
                if want in addresses(item, version)]

    def _held_elsewhere(self, action: str, params: dict[str, str], environ: dict[str, Any]
                        ) -> list[str]:
        if not self.aws_semantics or action != "AssignIpv6Addresses":
            return []
        ip = params.get("Ipv6Addresses.1", "")
        eni = params.get("NetworkInterfaceId", "")
        return [o for o in self._holders(environ, ip) if o != eni] if ip else []

    def _touched(self, action: str, params: dict[str, str], environ: dict[str, Any]
                 ) -> list[tuple[str, str]]:
        """(resource, aspect) a write changes, incl. the ENIs a reassignment takes from."""
        if action in ("AssignIpv6Addresses", "UnassignIpv6Addresses"):
            return [(params.get("NetworkInterfaceId", ""), "addresses")]
        if action in ("AssignPrivateIpAddresses", "UnassignPrivateIpAddresses"):
            eni = params.get("NetworkInterfaceId", "")
            out = [(eni, "addresses")]
            if action == "AssignPrivateIpAddresses":
                ip = params.get("PrivateIpAddress.1", "")
                out += [(o, "addresses") for o in self._holders(environ, ip) if o != eni]
            return out
        if action in ("CreateTags", "DeleteTags"):
            return [(v, "tags") for k, v in params.items() if k.startswith("ResourceId.")]
        if action == "AssociateAddress":
            return [(params.get("AllocationId", ""), "assoc")]
        if action in ("CreateRoute", "ReplaceRoute", "DeleteRoute"):
            return [(params.get("RouteTableId", ""), "routes")]
        return []

    def _before_write(self, action: str, params: dict[str, str], environ: dict[str, Any]
                      ) -> None:
        touched = self._touched(action, params, environ)
        if self.aws_semantics and action == "AssignPrivateIpAddresses" and params.get(
                "AllowReassignment") == "true":
            # EC2 moves the address; moto would list it on both ENIs
            ip = params.get("PrivateIpAddress.1", "")
            for other, _ in touched[1:]:
                self._app(environ, [("Action", "UnassignPrivateIpAddresses"),
                                    ("Version", "2016-11-15"), ("NetworkInterfaceId", other),
                                    ("PrivateIpAddress.1", ip)])
        lag = self.lag
        if lag is None or not touched:
            return
        # the state before the write (snapshotted before the reassignment's unassigns too):
        # describes show it until this write becomes visible
        now = time.monotonic()
        shows = now + lag.rng.uniform(0, lag.max_s)
        for n, (resource, aspect) in enumerate(touched):
            describe = DESCRIBE_OF.get(resource.split("-", 1)[0])
            item = self._snap.get(resource)
            if describe is None or item is None:
                continue
            names = ITEMS[describe][2][aspect]
            old = [copy.deepcopy(c) for c in item if local(c.tag) in names]
            # the ENIs a reassignment takes the address from show it no earlier than the
            # target does: a stale read may list it twice (EC2 does), never nowhere
            at = shows if n == 0 else shows + lag.rng.uniform(0, lag.max_s)
            with self.lock:
                lag.hidden.append(Hidden(resource, aspect, old, at, action))

    def _snapshot(self, action: str, params: dict[str, str], environ: dict[str, Any]
                  ) -> None:
        """Read what the write will touch, before anything changes it."""
        self._snap.clear()
        if self.lag is None:
            return
        for resource, _ in self._touched(action, params, environ):
            describe = DESCRIBE_OF.get(resource.split("-", 1)[0])
            if describe is not None and resource not in self._snap:
                found = self._describe(environ, describe, [resource]).get(resource)
                if found is not None:
                    self._snap[resource] = found

    def _rewrite_describe(self, action: str, pairs: list[tuple[str, str]]
                          ) -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]]]:
        """Take out the filters evaluated here; renumber the rest (moto wants 1..n)."""
        filters: dict[str, tuple[str, list[str]]] = {}
        rest: list[tuple[str, str]] = []
        for k, v in pairs:
            if k.startswith("Filter."):
                _, n, *tail = k.split(".")
                name, values = filters.get(n, ("", []))
                if tail == ["Name"]:
                    name = v
                else:
                    values = [*values, v]
                filters[n] = (name, values)
            else:
                rest.append((k, v))
        ours = [f for f in filters.values() if f[0] in WIRE_FILTERS]
        keep = [f for f in filters.values() if f[0] not in WIRE_FILTERS]
        for i, (name, values) in enumerate(keep, 1):
            rest.append((f"Filter.{i}.Name", name))
            rest += [(f"Filter.{i}.Value.{j}", v) for j, v in enumerate(values, 1)]
        return rest, ours

    def _shape(self, action: str, client: str, data: bytes,
               filters: list[tuple[str, list[str]]]) -> bytes:
        root = ET.fromstring(data)
        parent = next((n for n in root.iter() if local(n.tag) == ITEMS[action][0]), None)
        if parent is None:
            return data
        now = time.monotonic()
        lag = self.lag if self.lag is not None and self.lag.applies(client) else None
        stale = False
        for item in list(parent):
            rid = item_id(item, action)
            if lag is not None:
                with self.lock:
                    hidden = list(lag.hidden)
                for aspect, names in ITEMS[action][2].items():
                    # the state before the earliest write of this aspect still hidden
                    first = next((h for h in hidden if h.resource == rid
                                  and h.aspect == aspect and h.visible_at > now), None)
                    if first is None:
                        continue
                    stale = True
                    for c in [c for c in item if local(c.tag) in names]:
                        item.remove(c)
                    for c in first.old:
                        item.append(copy.deepcopy(c))
            if not all(matches(item, name, values) for name, values in filters):
                parent.remove(item)
        if stale and lag is not None:
            with self.lock:
                lag.stale_answers += 1
        return bytes(ET.tostring(root, encoding="utf-8", xml_declaration=True))

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
        if fault is None or fault.kind == "delay":
            if self.aws_semantics or self.lag is not None:
                return self._ec2(action, client, params, body, environ, start_response)
        elif fault is not None:
            return _error(start_response, *ERROR_STATUS[fault.kind])
        return self.app(environ, start_response)  # type: ignore[no-any-return]

    def _ec2(self, action: str, client: str, params: dict[str, str], body: bytes,
             environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        pairs = urllib.parse.parse_qsl(body.decode(errors="replace"), keep_blank_values=True)
        dry = params.get("DryRun") == "true"
        if action in ITEMS and not dry:
            pairs, ours = self._rewrite_describe(action, pairs)
            # never between the halves of a write (a reassignment is unassign + assign
            # here, one step on EC2)
            with self.write_lock:
                status, headers, data = self._app(environ, pairs)
            if status.startswith("200"):
                data = self._shape(action, client, data, ours)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            start_response(status, [*headers, ("Content-Length", str(len(data)))])
            return [data]
        if not dry and action and not action.startswith("Describe"):
            # one write at a time: its snapshot, the reassignment and the write itself
            with self.write_lock:
                held = self._held_elsewhere(action, params, environ)
                if held:
                    # EC2 has no AllowReassignment for IPv6: an address another ENI holds
                    # is refused (moto would list it on both)
                    return _error(start_response, *ERROR_STATUS["in_use"])
                self._snapshot(action, params, environ)
                self._before_write(action, params, environ)
                status, headers, data = self._app(environ, pairs)
        else:
            status, headers, data = self._app(environ, pairs)
        start_response(status, headers)
        return [data]


def _error(start_response: StartResponse, status: str, code: str, message: str
           ) -> list[bytes]:
    """An EC2 error answer on the wire, as botocore parses AWS's."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
        f"<Code>{code}</Code><Message>{message}</Message></Error></Errors>"
        f"<RequestID>{uuid.uuid4()}</RequestID></Response>"
    ).encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(xml)))])
    return [xml]


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
