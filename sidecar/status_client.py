"""`vip-sidecar status`: fetch /status over a unix socket or HTTP and print a table."""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from typing import Any
from urllib.parse import quote, urlparse


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 5.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        try:
            self.sock.connect(self._path)
        except OSError as exc:  # say which socket: "Permission denied" alone helps nobody
            raise ValueError(f"cannot connect to {self._path}: {exc.strerror or exc}") from None


def fetch_status(socket_path: str | None, url: str | None, timeout: float = 5.0) -> Any:
    return request(socket_path, url, "GET", "/status", timeout)


def request(
    socket_path: str | None, url: str | None, method: str, path: str, timeout: float = 5.0
) -> Any:
    conn: http.client.HTTPConnection
    if url:
        u = urlparse(url)
        conn = http.client.HTTPConnection(u.hostname or "127.0.0.1", u.port or 80, timeout=timeout)
    elif socket_path:
        conn = _UnixHTTPConnection(socket_path, timeout)
    else:
        raise ValueError("give --socket PATH or --url http://HOST:PORT")
    try:
        conn.request(method, path)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            text = " ".join(body.decode(errors="replace").split())
            raise ValueError(f"{method} {path}: HTTP {resp.status}: {text}")
        return json.loads(body)
    except http.client.HTTPException as exc:  # a peer that is not our server
        raise ValueError(f"{method} {path}: bad HTTP answer: {type(exc).__name__} {exc}") from None
    finally:
        conn.close()


def format_table(status: dict[str, Any]) -> str:
    head = (
        "VIP",
        "VHID",
        "IFACE",
        "ADDR",
        "STATE",
        "SINCE",
        "REASON",
        "MASTER SEEN",
        "SENT",
        "RECV",
        "DROPS",
    )
    rows = [head]
    now = time.time()
    for v in status.get("vips", []):
        seen = v.get("master_seen") or {}
        c = v.get("counters", {})
        rows.append(
            (
                v["name"],
                str(v["vhid"]),
                v["interface"],
                v["addr"],
                v["state"],
                f"{now - v['since']:.0f}s ago",
                v["last_reason"],
                f"{seen.get('src', '-')} ({seen.get('advbase', '-')}/{seen.get('advskew', '-')})"
                if seen
                else "-",
                str(c.get("adverts_sent", 0)),
                str(c.get("adverts_received", 0)),
                str(sum(c.get("drops", {}).values())),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.append(
        f"node {status.get('node')}  healthy={status.get('healthy')}  ready={status.get('ready')}"
    )
    return "\n".join(lines)


def print_status(socket_path: str | None, url: str | None, raw: bool) -> int:
    try:
        status = fetch_status(socket_path, url)
    except (OSError, ValueError) as exc:
        print(f"vip-sidecar status: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if raw else format_table(status))
    return 0


def control(socket_path: str | None, action: str, vip: str, hold: float) -> int:
    """`vip-sidecar ctl`: demote / maintenance on|off / reload over the unix status socket."""
    if not socket_path:
        print("vip-sidecar ctl: give --socket PATH (or VIP_SIDECAR_STATUS_SOCKET)", file=sys.stderr)
        return 2
    # names are one path segment: quote everything, '/', '#', '?' and spaces included
    name = quote(vip, safe="")
    path = {
        "demote": f"/v1/vips/{name}/demote?hold={hold:g}",
        "maintenance-on": f"/v1/vips/{name}/maintenance/on",
        "maintenance-off": f"/v1/vips/{name}/maintenance/off",
        "reload": "/v1/reload",
    }[action]
    # a reload waits for removed VIPs to bow out and hand over (shutdown_timeout)
    timeout = 60.0 if action == "reload" else 5.0
    try:
        print(json.dumps(request(socket_path, None, "POST", path, timeout)))
    except (OSError, ValueError) as exc:
        print(f"vip-sidecar ctl: {exc}", file=sys.stderr)
        return 1
    return 0
