"""Parsers of the daemon's config fields: a raw value in, a typed value out, or a
ValueError whose message says what is accepted (config.py adds the field's name)."""

from __future__ import annotations

import os
import re
from ipaddress import IPv4Address, IPv6Address
from typing import Any

from vip_sidecar import parsing
from vip_sidecar.carp import MAX_PASSWORD_LEN
from vip_sidecar.inet import IPAddress

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


def host_address(value: Any) -> IPAddress:
    """An address one host can own and send from (srcip, a VIP, a peer), IPv4 or IPv6:
    not unspecified, multicast, broadcast, loopback, IPv4's reserved 240.0.0.0/4 or an
    IPv4-mapped IPv6 address (that is an IPv4 host: write it as one)."""
    ip = parsing.ip_address(value)
    if ip.is_unspecified:
        raise ValueError(f"must not be the unspecified address, got {value!r}")
    if ip.is_multicast:
        raise ValueError(f"must be a unicast address, got the multicast address {value!r}")
    if ip == BROADCAST:
        raise ValueError(f"must be a unicast address, got the broadcast address {value!r}")
    if ip.is_loopback:
        raise ValueError(f"must not be a loopback address, got {value!r}")
    if isinstance(ip, IPv4Address) and ip.is_reserved:
        raise ValueError(f"must not be in the reserved 240.0.0.0/4, got {value!r}")
    if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
        raise ValueError(f"must not be an IPv4-mapped address; write {ip.ipv4_mapped}")
    return ip


def host_addresses(value: Any) -> IPAddress | tuple[IPAddress, ...]:
    """srcip: one address, or at most one per family joined by a comma, the form of
    Kubernetes' `status.hostIPs` on a dual-stack node ("10.0.0.5,fd00::5"); each VIP then
    takes the address of its own family (config._make_vip)."""
    text = str(value).strip()
    if "," not in text:
        return host_address(text)
    ips = tuple(host_address(part.strip()) for part in text.split(",") if part.strip())
    if len({ip.version for ip in ips}) != len(ips):
        raise ValueError(f"lists two addresses of one family, got {value!r}")
    return ips[0] if len(ips) == 1 else ips


def addr_text(value: Any) -> str:
    """The VIP, validated. An IPv4 VIP is kept as written (scripts receive the original
    text, as with ucarp); an IPv6 VIP becomes its compressed form (RFC 5952), the one
    spelling `ip -6 addr` prints and scripts can compare against."""
    text = str(value).strip()
    ip = host_address(text)
    return str(ip) if ip.version == 6 else text


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


def multicast(value: Any) -> IPAddress:
    """A CARP group: IPv4 224.0.0.0/4, or IPv6 ff00::/8 beyond the interface-local scope
    (ff01::/16 never leaves the host)."""
    ip = parsing.ip_address(value)
    if not ip.is_multicast:
        raise ValueError(
            f"must be a multicast address (224.0.0.0/4 or ff00::/8), got {value!r}"
        )
    if isinstance(ip, IPv6Address) and ip.packed[1] & 0x0F in (0, 1):
        raise ValueError(
            f"must have at least link-local scope (like ff02::12), got {value!r}"
        )
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


def peers(value: Any) -> tuple[IPAddress, ...]:
    items: list[Any]
    if isinstance(value, str):
        items = [v for v in value.replace(",", " ").split() if v]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        raise ValueError(f"must be a list of IP addresses, got {value!r}")
    return tuple(host_address(v) for v in items)
