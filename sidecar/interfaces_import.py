"""Debian's ucarp configuration, read from /etc/network/interfaces as ifupdown gives it
to the ucarp package's hook (/etc/network/if-up.d/ucarp).

Every `iface` stanza with `ucarp-vid`, `ucarp-vip` and `ucarp-password` becomes a VIP:
the hook runs `ucarp -i $IFACE -s $IF_ADDRESS -B -z -v VID -p PASSWORD -a VIP
-u UPSCRIPT -d DOWNSCRIPT [-P] [-k] [-b] [-r] [-M] [-x]`. The default scripts
(/usr/share/ucarp/vip-up, vip-down) run `ifup/ifdown IF:ucarp`, whose stanza holds the
VIP's address and netmask: vip-sidecar does that with its alias provider instead (no
ifupdown run from a failover daemon). Custom `ucarp-upscript`/`ucarp-downscript` run
through the script provider with ucarp's arguments. `source` and `source-directory`
lines are followed like ifupdown does.

`load(path)` returns (file_data, warnings); file_data has the shape of a config file
(`{"vips": [...]}`), so every later layer (environment, flags) applies as usual.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from vip_sidecar.config import VIP_FIELDS, ConfigError
from vip_sidecar.sources import read_text_file

# the Debian hook's defaults; they mean "ifup/ifdown IF:ucarp"
DEBIAN_UPSCRIPT = "/usr/share/ucarp/vip-up"
DEBIAN_DOWNSCRIPT = "/usr/share/ucarp/vip-down"

# option -> VIP field, as the hook maps IF_UCARP_* to ucarp flags
UCARP_OPTIONS = {
    "ucarp-vid": "vhid",
    "ucarp-vip": "addr",
    "ucarp-password": "pass",
    "ucarp-advskew": "advskew",
    "ucarp-advbase": "advbase",
    "ucarp-master": "preempt",
    "ucarp-deadratio": "deadratio",
    "ucarp-nomcast": "nomcast",
    "ucarp-xparam": "xparam",
    "ucarp-upscript": "upscript",
    "ucarp-downscript": "downscript",
}
REQUIRED = ("ucarp-vid", "ucarp-vip", "ucarp-password")
# the hook's `expr "$V" : "no\|off\|false\|0"`: anchored at the start, case-sensitive
_HOOK_FALSE = re.compile(r"^(no|off|false|0)")
# interfaces(5): source-directory includes only files named like this
_SOURCE_DIR_NAME = re.compile(r"^[a-zA-Z0-9_-]+$")
_HOOK_COMMANDS = ("pre-up", "up", "post-up", "down", "pre-down", "post-down")
MAX_DEPTH = 16


@dataclass
class Stanza:
    name: str
    where: str  # file:line, for messages
    options: dict[str, str] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """Lines with backslash continuations joined and comments dropped (a '#' starts a
    comment only as the first non-blank character, as in interfaces(5))."""
    out: list[tuple[int, str]] = []
    pending = ""
    start = 0
    text = read_text_file(str(path), "from-interfaces")  # binary/non-UTF-8: one line
    for lineno, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = lineno
        line = raw.rstrip()
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text = (pending + line).strip()
        pending = ""
        if text and not text.startswith("#"):
            out.append((start, text))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def parse(path: str | Path) -> list[Stanza]:
    """Every `iface` stanza of the file and the files it sources, in reading order."""
    stanzas: list[Stanza] = []
    _read(Path(path), stanzas, [], 0)
    return stanzas


def _read(path: Path, stanzas: list[Stanza], seen: list[Path], depth: int) -> None:
    try:
        resolved = path.resolve()
        if resolved in seen or depth > MAX_DEPTH:
            raise ConfigError("from-interfaces", f"{path}: source loop")
        lines = _logical_lines(path)
    except OSError as exc:
        raise ConfigError("from-interfaces", f"cannot read {path}: {exc.strerror}") from None
    seen = [*seen, resolved]
    current: Stanza | None = None
    for lineno, text in lines:
        word, _, rest = text.partition(" ")
        rest = rest.strip()
        if word == "iface":
            parts = rest.split()
            if not parts:
                raise ConfigError("from-interfaces", f"{path}:{lineno}: iface without a name")
            current = Stanza(parts[0], f"{path}:{lineno}")
            stanzas.append(current)
        elif word in ("source", "source-directory"):
            current = None
            for target in _sources(path, word, rest):
                _read(target, stanzas, seen, depth + 1)
        elif word in ("auto", "mapping", "rename", "no-auto-down", "no-scripts") or word.startswith(
            "allow-"
        ):
            current = None  # these end an iface stanza; their own options are not ours
        elif current is not None:
            if word in _HOOK_COMMANDS:
                current.hooks.append(text)
            else:
                # ifupdown keeps the last value of a repeated option for IF_* variables
                current.options[word] = rest


def _sources(including: Path, word: str, pattern: str) -> list[Path]:
    """Relative paths are taken from the including file's directory."""
    base = including.parent
    full = pattern if os.path.isabs(pattern) else str(base / pattern)
    if word == "source":
        return [Path(p) for p in sorted(glob.glob(full))]
    out: list[Path] = []
    for d in sorted(glob.glob(full)):
        if os.path.isdir(d):
            out.extend(
                Path(d, n)
                for n in sorted(os.listdir(d))
                if _SOURCE_DIR_NAME.match(n) and os.path.isfile(os.path.join(d, n))
            )
    return out


def _hook_flag(value: str) -> bool:
    """`ucarp-master`/`ucarp-nomcast` as the hook reads them: set unless it starts with
    no/off/false/0 (so 'yes', 'true', '1' and even 'maybe' switch it on)."""
    return bool(value) and not _HOOK_FALSE.match(value)


def _host_address(value: str, where: str) -> str:
    """`address` may be written CIDR-style (10.0.0.2/24); ucarp's -s wants the host."""
    try:
        return str(IPv4Address(value.split("/")[0].strip()))
    except ValueError:
        raise ConfigError(f"{where} address", f"must be an IPv4 address, got {value!r}") from None


def _prefix(stanza: Stanza) -> int:
    address = stanza.options.get("address", "")
    where = f"{stanza.where} ({stanza.name})"
    # CIDR in `address` wins over `netmask`, as ifupdown does
    netmask = address.split("/", 1)[1] if "/" in address else stanza.options.get("netmask", "32")
    try:
        return IPv4Network(f"0.0.0.0/{netmask.strip()}").prefixlen
    except ValueError:
        raise ConfigError(
            f"{where} netmask", f"must be a dotted netmask or a prefix length, got {netmask!r}"
        ) from None


def load(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    stanzas = parse(path)
    by_name = {s.name: s for s in stanzas}
    vips: list[dict[str, Any]] = []
    warnings: list[str] = []
    for st in stanzas:
        ucarp = {k: v for k, v in st.options.items() if k.startswith("ucarp-")}
        if not ucarp:
            continue
        where = f"{st.where} ({st.name})"
        for key in ucarp:
            if key not in UCARP_OPTIONS:
                raise ConfigError(
                    f"{where} {key}",
                    f"unknown ucarp option; accepted: {', '.join(sorted(UCARP_OPTIONS))}",
                )
        missing = [k for k in REQUIRED if not ucarp.get(k)]
        if missing:
            # the hook silently starts nothing; an import that drops a VIP must say so
            raise ConfigError(f"{where} {missing[0]}", "required for ucarp to start")
        if "address" not in st.options:
            raise ConfigError(
                f"{where} address", "ucarp needs this interface's static address (ucarp -s)"
            )
        vip: dict[str, Any] = {
            "name": f"{st.name}-ucarp",
            "interface": st.name,
            "srcip": _host_address(st.options["address"], where),
        }
        for key, value in ucarp.items():
            target = UCARP_OPTIONS[key]
            vip[target] = _hook_flag(value) if target in ("preempt", "nomcast") else value
        _check_values(vip, where)
        vip["providers"] = _providers(st, vip, by_name.get(f"{st.name}:ucarp"), where, warnings)
        vips.append(vip)
    if not vips:
        raise ConfigError("from-interfaces", f"no iface stanza in {path} has ucarp-* options")
    return {"vips": vips}, warnings


def _check_values(vip: dict[str, Any], where: str) -> None:
    """Name the interfaces option (not our field) when a value is refused."""
    for key, target in UCARP_OPTIONS.items():
        if target in vip:
            try:
                VIP_FIELDS[target](vip[target])
            except ValueError as exc:
                raise ConfigError(f"{where} {key}", str(exc)) from None


def _providers(
    st: Stanza, vip: dict[str, Any], alias: Stanza | None, where: str, warnings: list[str]
) -> list[Any]:
    custom_up = vip.get("upscript") not in (None, DEBIAN_UPSCRIPT)
    custom_down = vip.get("downscript") not in (None, DEBIAN_DOWNSCRIPT)
    for name in ("upscript", "downscript"):
        if vip.get(name) in (DEBIAN_UPSCRIPT, DEBIAN_DOWNSCRIPT):
            del vip[name]
    providers: list[Any] = []
    if not (custom_up and custom_down):
        # a default script runs `ifup/ifdown IF:ucarp`: the alias provider does that
        if alias is None:
            warnings.append(
                f"{where}: no 'iface {st.name}:ucarp' stanza (the default vip-up script would "
                f"find nothing to bring up); adding {vip['addr']}/32 with the alias provider"
            )
            prefix = 32
        else:
            prefix = _prefix(alias)
            stanza_addr = alias.options.get("address", "").split("/")[0].strip()
            if stanza_addr and stanza_addr != vip["addr"]:
                raise ConfigError(
                    f"{alias.where} ({alias.name}) address",
                    f"{stanza_addr} differs from ucarp-vip {vip['addr']}; "
                    "vip-sidecar brings up the advertised address",
                )
            if alias.hooks:
                warnings.append(
                    f"{alias.where} ({alias.name}): {len(alias.hooks)} pre-up/up/down line(s) "
                    "are not run; move them to a ucarp-upscript/ucarp-downscript"
                )
        providers.append({"name": "alias", "prefix": prefix})
    if custom_up or custom_down:
        providers.append("script")
    return providers
