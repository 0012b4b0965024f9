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

The stanza's family is the VIP's: an `inet6` stanza's ucarp lines make an IPv6 VIP
(named IF-ucarp6, prefix from the `IF:ucarp inet6` stanza), so an interface carries at
most one VIP per family; a VIP of the other family is refused naming the option.

`load(path)` returns (file_data, warnings); file_data has the shape of a config file
(`{"vips": [...]}`), so every later layer (environment, flags) applies as usual.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from ipaddress import ip_network
from pathlib import Path
from typing import Any

from vip_sidecar import parsing
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
# interfaces(5) address families that can hold a ucarp VIP, and their IP version
FAMILIES = {"inet": 4, "inet6": 6}
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
    family: str = "inet"  # interfaces(5): inet, inet6 (others carry no ucarp VIP)
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
            family = parts[1] if len(parts) > 1 else ""
            current = Stanza(parts[0], f"{path}:{lineno}", family)
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


def _host_address(value: str, where: str, family: str) -> str:
    """`address` may be written CIDR-style (10.0.0.2/24, 2001:db8::2/64); ucarp's -s
    wants the host, of the stanza's family."""
    version = FAMILIES[family]
    try:
        ip = parsing.ip_address(value.split("/")[0])
    except ValueError:
        ip = None
    if ip is None or ip.version != version:
        raise ConfigError(
            f"{where} address", f"must be an IPv{version} address in an {family} stanza, "
            f"got {value!r}"
        ) from None
    return str(ip)


def _prefix(stanza: Stanza) -> int:
    address = stanza.options.get("address", "")
    where = f"{stanza.where} ({stanza.name})"
    bits = 32 if FAMILIES[stanza.family] == 4 else 128
    # CIDR in `address` wins over `netmask`, as ifupdown does; inet6's netmask is a
    # prefix length only (interfaces(5))
    netmask = address.split("/", 1)[1] if "/" in address else stanza.options.get("netmask")
    try:
        base = "0.0.0.0" if bits == 32 else "::"
        return ip_network(f"{base}/{(netmask or str(bits)).strip()}").prefixlen
    except ValueError:
        accepted = "a dotted netmask or a prefix length" if bits == 32 else "a prefix length"
        raise ConfigError(f"{where} netmask", f"must be {accepted}, got {netmask!r}") from None


def load(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    stanzas = parse(path)
    by_name = {(s.name, s.family): s for s in stanzas}
    vips: list[dict[str, Any]] = []
    vhids: dict[tuple[str, int], str] = {}
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
        if st.family not in FAMILIES:
            raise ConfigError(
                where, f"ucarp-* options in an {st.family or 'unnamed'} stanza; "
                "they belong in an inet or inet6 stanza"
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
            # an interface may carry one VIP per family (dual-stack: two stanzas)
            "name": f"{st.name}-ucarp" + ("6" if st.family == "inet6" else ""),
            "interface": st.name,
            "srcip": _host_address(st.options["address"], where, st.family),
        }
        for key, value in ucarp.items():
            target = UCARP_OPTIONS[key]
            vip[target] = _hook_flag(value) if target in ("preempt", "nomcast") else value
        _check_values(vip, where)
        _check_family(st, vip, where)
        slot = (st.name, VIP_FIELDS["vhid"](vip["vhid"]))
        if slot in vhids:
            raise ConfigError(
                f"{where} ucarp-vid",
                f"vhid {slot[1]} on {st.name} is already used by {vhids[slot]}: "
                "one vhid per VIP (dual-stack: one for each family)",
            )
        vhids[slot] = where
        alias = by_name.get((f"{st.name}:ucarp", st.family))
        vip["providers"] = _providers(st, vip, alias, where, warnings)
        vips.append(vip)
    if not vips:
        raise ConfigError("from-interfaces", f"no iface stanza in {path} has ucarp-* options")
    return {"vips": vips}, warnings


def _check_family(st: Stanza, vip: dict[str, Any], where: str) -> None:
    """An inet stanza's VIP is IPv4, an inet6 stanza's IPv6: ucarp's -s is the stanza's
    address, and one VIP has one family. Named here, by the interfaces option."""
    version = FAMILIES[st.family]
    addr = parsing.ip_address(vip["addr"])
    if addr.version != version:
        other = "inet6" if version == 4 else "inet"
        raise ConfigError(
            f"{where} ucarp-vip",
            f"{addr} is IPv{addr.version} but this is an {st.family} stanza (its address "
            f"{vip['srcip']} is the advert source): move the ucarp-* lines to an "
            f"'iface {st.name} {other}' stanza",
        )
    if version == 6 and vip.get("nomcast"):
        raise ConfigError(
            f"{where} ucarp-nomcast",
            "IPv6 has no broadcast: drop it (adverts go to ff02::12)",
        )


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
            prefix = 32 if FAMILIES[st.family] == 4 else 128
            warnings.append(
                f"{where}: no 'iface {st.name}:ucarp {st.family}' stanza (the default vip-up "
                f"script would find nothing to bring up); adding {vip['addr']}/{prefix} "
                "with the alias provider"
            )
        else:
            prefix = _prefix(alias)
            stanza_addr = alias.options.get("address", "").split("/")[0].strip()
            if stanza_addr and not _same_address(stanza_addr, vip["addr"]):
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


def _same_address(text: str, vip_text: str) -> bool:
    """2001:DB8::10 and 2001:db8:0::10 are one IPv6 address; unparsable text is not."""
    try:
        return parsing.ip_address(text) == parsing.ip_address(vip_text)
    except ValueError:
        return False
