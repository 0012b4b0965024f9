"""A small IMDSv2 server: token PUT, GETs that need the token, per-client instances.

Like the real service it answers each caller about its own instance: the caller's
source address picks the instance, so two sidecar nodes in two network namespaces can
share one server. Faults: a token PUT that never answers (the hop-limit symptom),
revoking all tokens (401 on the next GET), slow answers.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

IPV6_LEAVES = ("ipv6s", "subnet-ipv6-cidr-blocks", "vpc-ipv6-cidr-blocks")


@dataclass
class EniMeta:
    interface_id: str
    subnet_id: str
    vpc_id: str
    local_ipv4s: list[str]
    subnet_cidr: str
    vpc_cidrs: list[str]
    device_number: int = 0
    # empty: an IPv4-only subnet (IMDS then answers 404 for the IPv6 leaves)
    subnet_ipv6_cidrs: list[str] = field(default_factory=list)
    vpc_ipv6_cidrs: list[str] = field(default_factory=list)


@dataclass
class InstanceMeta:
    instance_id: str
    region: str
    az: str
    macs: dict[str, EniMeta] = field(default_factory=dict)
    publish_region: bool = True  # False: only placement/availability-zone (old IMDS)


@dataclass
class ImdsCounters:
    puts: int = 0
    gets: int = 0
    unauthorized: int = 0
    hung_puts: int = 0


class FakeImds:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.instances: dict[str, InstanceMeta] = {}
        self.default: InstanceMeta | None = None
        self.tokens: dict[str, float] = {}  # token -> expiry (time.monotonic)
        self.counters = ImdsCounters()
        self.hang_put = False  # simulate hop limit 1: the PUT answer never arrives
        self.delay_s = 0.0
        # live local-ipv4s by ENI id (e.g. read from moto), like the real IMDS after a remap
        self.local_ipv4s_from: Callable[[str], list[str]] | None = None
        self.ipv6s_from: Callable[[str], list[str]] | None = None  # the same for ipv6s
        self.lock = threading.Lock()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def _send(self, status: int, body: str = "") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_PUT(self) -> None:
                with fake.lock:
                    fake.counters.puts += 1
                if self.path != "/latest/api/token":
                    return self._send(404, "Not Found")
                if fake.hang_put:
                    with fake.lock:
                        fake.counters.hung_puts += 1
                    fake._release.wait(30)
                    return None
                if self.headers.get("X-Forwarded-For"):
                    return self._send(403, "Forbidden")
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                try:
                    seconds = int(ttl or "")
                except ValueError:
                    return self._send(400, "Missing or invalid TTL header")
                if not 1 <= seconds <= 21600:
                    return self._send(400, "Invalid TTL")
                token = secrets.token_urlsafe(32)
                with fake.lock:
                    fake.tokens[token] = time.monotonic() + seconds
                return self._send(200, token)

            def do_GET(self) -> None:
                with fake.lock:
                    fake.counters.gets += 1
                if fake.delay_s:
                    time.sleep(fake.delay_s)
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with fake.lock:
                    valid = fake.tokens.get(token, 0) > time.monotonic()
                    if not valid:
                        fake.counters.unauthorized += 1
                if not valid:
                    return self._send(401, "Unauthorized")
                inst = fake.instances.get(self.client_address[0], fake.default)
                if inst is None:
                    return self._send(404, "Not Found")
                value = fake.lookup(inst, self.path, fake.local_ipv4s_from, fake.ipv6s_from)
                if value is None:
                    return self._send(404, "Not Found")
                return self._send(200, value)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.host, self.port = str(self.server.server_address[0]), int(
            self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    @staticmethod
    def lookup(inst: InstanceMeta, path: str,
               live: Callable[[str], list[str]] | None = None,
               live6: Callable[[str], list[str]] | None = None) -> str | None:
        prefix = "/latest/meta-data/"
        if not path.startswith(prefix):
            return None
        p = path[len(prefix):]
        primary = next(iter(inst.macs), None)
        simple = {
            "instance-id": inst.instance_id,
            "placement/availability-zone": inst.az,
            "mac": primary,
            "local-ipv4": inst.macs[primary].local_ipv4s[0] if primary else None,
            "network/interfaces/macs/": "\n".join(f"{m}/" for m in inst.macs),
        }
        if inst.publish_region:
            simple["placement/region"] = inst.region
        if p in simple:
            return simple[p]
        parts = p.split("/")
        if len(parts) == 5 and parts[:3] == ["network", "interfaces", "macs"]:
            eni = inst.macs.get(parts[3])
            if eni is None:
                return None
            leaf = {
                "interface-id": eni.interface_id,
                "subnet-id": eni.subnet_id,
                "vpc-id": eni.vpc_id,
                "local-ipv4s": "\n".join(live(eni.interface_id) if live else eni.local_ipv4s),
                "subnet-ipv4-cidr-block": eni.subnet_cidr,
                "vpc-ipv4-cidr-blocks": "\n".join(eni.vpc_cidrs),
                "device-number": str(eni.device_number),
                "ipv6s": "\n".join(live6(eni.interface_id) if live6 else []),
                "subnet-ipv6-cidr-blocks": "\n".join(eni.subnet_ipv6_cidrs),
                "vpc-ipv6-cidr-blocks": "\n".join(eni.vpc_ipv6_cidrs),
            }
            value = leaf.get(parts[4])
            # like IMDS: an empty IPv6 list is no leaf at all (404)
            return value if value or parts[4] not in IPV6_LEAVES else None
        return None

    def stop(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
