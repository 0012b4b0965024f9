"""Parsers of the daemon's config fields: a raw value in, a typed value out, or a
ValueError whose message says what is accepted (config.py adds the field's name)."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address
from typing import Any

from vip_sidecar import parsing
from vip_sidecar.carp import MAX_PASSWORD_LEN

BROADCAST = IPv4Address("255.255.255.255")

seconds = parsing.number(0.0, None, unit="seconds", lo_open=True)


def http_address(value: Any) -> str:
    """HOST:PORT (IPv4, [IPv6] or a name) or unix:/path."""
    text = str(value).strip()
    if text.startswith("unix:/") or text.startswith("/"):
        return text
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535 or not host:
        raise ValueError(f"must be HOST:PORT (port 1..65535) or unix:/path, got {value!r}")
    return text


def ipv4_nonzero(value: Any) -> IPv4Address:
    ip = parsing.ipv4(value)
    if int(ip) == 0:
        raise ValueError("must not be 0.0.0.0")
    return ip


def host_address(value: Any) -> IPv4Address:
    """An address one host can own and send from (srcip, a VIP, a peer): not 0.0.0.0,
    multicast, the limited broadcast, loopback or the reserved 240.0.0.0/4."""
    ip = ipv4_nonzero(value)
    if ip.is_multicast:
        raise ValueError(f"must be a unicast address, got the multicast address {value!r}")
    if ip == BROADCAST:
        raise ValueError(f"must be a unicast address, got the broadcast address {value!r}")
    if ip.is_loopback:
        raise ValueError(f"must not be a loopback address (127.0.0.0/8), got {value!r}")
    if ip.is_reserved:
        raise ValueError(f"must not be in the reserved 240.0.0.0/4, got {value!r}")
    return ip


def addr_text(value: Any) -> str:
    """The VIP, validated but kept as written: scripts receive the original text."""
    text = str(value).strip()
    host_address(text)
    return text


# A VIP name appears in every log line, metric label, URL path and Kubernetes object
# name: a DNS-label-like word keeps all of them unambiguous (no newline can fake a log
# line, no '/' or '#' breaks a URL) and bounded.
NAME_MAX = 63
_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?")


def vip_name(value: Any) -> str:
    text = str(value)
    if len(text) > NAME_MAX or not _NAME_RE.fullmatch(text):
        shown = repr(text[:NAME_MAX]) + ("..." if len(text) > NAME_MAX else "")
        raise ValueError(
            f"must be 1..{NAME_MAX} letters, digits, '-', '_' or '.', starting and ending "
            f"with a letter or digit, got {shown}"
        )
    return text


def multicast(value: Any) -> IPv4Address:
    ip = parsing.ipv4(value)
    if not ip.is_multicast:
        raise ValueError(f"must be an IPv4 multicast address (224.0.0.0/4), got {value!r}")
    return ip


def interface_name(value: Any) -> str:
    text = parsing.text(value)
    # the kernel's dev_valid_name(): no '/', ':' or whitespace, at most 15 bytes
    if len(text.encode()) > 15 or any(c in text for c in "/:") or not text.isprintable() or (
        any(c.isspace() for c in text)
    ):
        raise ValueError(
            f"must be a Linux interface name (<= 15 chars, no '/', ':' or spaces), got {text!r}"
        )
    return text


def password(value: Any) -> bytes:
    raw = value if isinstance(value, bytes) else os.fsencode(str(value))
    if not raw:
        raise ValueError("must not be empty")
    if len(raw) > MAX_PASSWORD_LEN:
        raise ValueError(
            f"must be 1..{MAX_PASSWORD_LEN} bytes (ucarp's limit), got {len(raw)} bytes"
        )
    return raw


def peers(value: Any) -> tuple[IPv4Address, ...]:
    items: list[Any]
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"must be a list of IPv4 addresses, got {value!r}")
    return tuple(host_address(v) for v in items)
