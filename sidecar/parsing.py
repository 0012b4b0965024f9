"""Typed value parsers shared by the daemon's config and every provider's options.

Values arrive as YAML/JSON scalars, environment text or command-line strings. Each
parser returns the typed value or raises ValueError saying what is accepted; callers
prefix the field name, so an operator always gets "<field>: must be ..., got ...".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from ipaddress import AddressValueError, IPv4Address, IPv6Address
from typing import Any, TypeVar

from vip_sidecar.inet import IPAddress

T = TypeVar("T")
Parser = Callable[[Any], T]

TRUE_WORDS = ("1", "yes", "true", "on", "y")
FALSE_WORDS = ("0", "no", "false", "off", "n", "")


def boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise ValueError(f"must be a boolean (yes/no/true/false/1/0), got {value!r}")


def ipv4(value: Any) -> IPv4Address:
    try:
        return IPv4Address(str(value).strip())
    except AddressValueError:
        raise ValueError(f"must be an IPv4 address like 192.0.2.10, got {value!r}") from None


def ip_address(value: Any) -> IPAddress:
    """An IPv4 or IPv6 address. An IPv6 zone ("%eth0") is refused: the interface is a
    field of its own, and a zoned address never equals the same address on the wire."""
    text = str(value).strip()
    try:
        if ":" not in text:
            return IPv4Address(text)
        if "%" not in text:
            return IPv6Address(text)
    except AddressValueError:
        pass
    host, zone = text.split("%", 1) if "%" in text else (text, "")
    if zone and _is_ipv6(host):
        # FreeBSD writes link-locals as fe80::1%em0: say what to write instead
        raise ValueError(
            f"an IPv6 zone ('%{zone}') is not accepted (the interface is its own field); "
            f"write {IPv6Address(host)}"
        )
    raise ValueError(
        f"must be an IPv4 or IPv6 address like 192.0.2.10 or 2001:db8::10, got {value!r}"
    )


def _is_ipv6(text: str) -> bool:
    try:
        IPv6Address(text)
    except AddressValueError:
        return False
    return True


def c_integer(text: str) -> int:
    """C base-0 integers like ucarp's strtol: 0x10 = 16, 010 = 8, 10 = 10."""
    t = text.strip().lower()
    neg = t.startswith("-")
    t = t.lstrip("+-")
    if t.startswith("0x"):
        value = int(t[2:], 16)
    elif len(t) > 1 and t.startswith("0"):
        value = int(t[1:], 8)
    else:
        value = int(t, 10)
    return -value if neg else value


def integer(lo: int, hi: int | None) -> Parser[int]:
    accepted = f"an integer {lo}..{hi}" if hi is not None else f"an integer >= {lo}"

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"must be {accepted}, got {value!r}")
        try:
            n = value if isinstance(value, int) else c_integer(str(value))
        except ValueError:
            raise ValueError(f"must be {accepted}, got {value!r}") from None
        if n < lo or (hi is not None and n > hi):
            raise ValueError(f"must be {accepted}, got {value!r}")
        return n

    return parse


def number(lo: float, hi: float | None, *, unit: str = "", lo_open: bool = False) -> Parser[float]:
    """A float in [lo, hi] (or (lo, hi] with lo_open)."""
    what = f"a number{' of ' + unit if unit else ''}"
    bounds = (f"> {lo:g}" if lo_open else f">= {lo:g}") + (
        f" and <= {hi:g}" if hi is not None else ""
    )

    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError(f"must be {what} {bounds}, got {value!r}")
        try:
            f = float(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int past 1e308
            raise ValueError(f"must be {what} {bounds}, got {value!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"must be {what} {bounds}, got {value!r}")
        too_low = f <= lo if lo_open else f < lo
        if too_low or (hi is not None and f > hi):
            raise ValueError(f"must be {what} {bounds}, got {value!r}")
        return f

    return parse


def choice(options: tuple[str, ...]) -> Parser[str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {value!r}")
        return text

    return parse


def text(value: Any) -> str:
    out = str(value)
    if not out.strip():
        raise ValueError("must not be empty")
    return out


def normalise_key(key: Any, aliases: Mapping[str, str] | None = None) -> str:
    k = str(key).strip().lower().replace("-", "_")
    return (aliases or {}).get(k, k)


class OptionBag:
    """Reads a provider's option mapping key by key; leftovers are reported as unknown.

    `error` builds the exception (providers raise ProviderConfigError) from a message
    that already names `<where>.<key>`.
    """

    def __init__(
        self,
        where: str,
        raw: Mapping[str, Any],
        error: Callable[[str], Exception] = ValueError,
        aliases: Mapping[str, str] | None = None,
    ) -> None:
        self.where = where
        self._raw = {normalise_key(k, aliases): v for k, v in raw.items()}
        self._error = error
        self._known: list[str] = []

    def take(self, key: str, parser: Parser[T], default: T) -> T:
        self._known.append(key)
        if key not in self._raw:
            return default
        value = self._raw.pop(key)
        try:
            return parser(value)
        except ValueError as exc:
            raise self._error(f"{self.where}.{key}: {exc}") from None

    def fail(self, key: str, message: str) -> Exception:
        return self._error(f"{self.where}.{key}: {message}")

    def finish(self) -> None:
        if self._raw:
            raise self._error(
                f"{self.where}: unknown options {sorted(self._raw)}; accepted: "
                f"{', '.join(sorted(self._known))}"
            )
