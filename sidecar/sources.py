"""Where configuration comes from, and the one path that assembles it.

`assemble` is what start-up, `vip-sidecar check` and a reload all call: it reads what a
ConfigRequest names (a YAML/TOML/JSON file or Debian's interfaces, FreeBSD rc.conf and its
ucarp_flags) and hands the layers (file, environment, rc.conf, flags) to
config.build_config, which merges and validates them. Every problem is a ConfigError
naming the field or the file.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vip_sidecar import flags as flagmod
from vip_sidecar.config import (
    ENV_PREFIX,
    Config,
    ConfigError,
    build_config,
    one_password,
    overlay,
)

# a config file is a few dozen values; anything far larger is a mistake or an attack
# (nine levels of YAML aliases expand to a billion leaves: printing one would hang)
MAX_FILE_NODES = 10_000
MAX_FILE_DEPTH = 32


def _check_size(data: Any, path: str) -> None:
    """Walk the loaded document (shared YAML aliases counted at every use) and refuse it
    past MAX_FILE_NODES values or MAX_FILE_DEPTH levels; stops as soon as one is hit."""
    todo: list[tuple[Any, int]] = [(data, 0)]
    seen = 0
    while todo:
        value, depth = todo.pop()
        seen += 1
        if seen > MAX_FILE_NODES:
            raise ConfigError("config", f"{path} has more than {MAX_FILE_NODES} values")
        if depth > MAX_FILE_DEPTH:
            raise ConfigError("config", f"{path} is nested more than {MAX_FILE_DEPTH} levels deep")
        if isinstance(value, Mapping):
            todo.extend((v, depth + 1) for kv in value.items() for v in kv)
        elif isinstance(value, list | tuple):
            todo.extend((v, depth + 1) for v in value)


def read_text_file(path: str, field_name: str) -> str:
    """A config-like file as text, or a ConfigError naming the field and the file: an
    unreadable, binary or non-UTF-8 file is an operator mistake, not a crash."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(field_name, f"cannot read {path}: {exc.strerror}") from None
    if b"\0" in raw:
        raise ConfigError(
            field_name, f"{path} is a binary file (NUL byte at offset {raw.index(0)}), not text"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            field_name,
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
        ) from None


def _one_line(exc: Exception) -> str:
    """PyYAML's errors carry a multi-line caret block: keep the problem and its place."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1} column {mark.column + 1}: {problem}"
    return " ".join(str(exc).split())


def load_file(path: str) -> dict[str, Any]:
    """Read a YAML, TOML or JSON file into a plain mapping."""
    p = Path(path)
    text = read_text_file(path, "config")
    kind = {".toml": "TOML", ".json": "JSON"}.get(p.suffix, "YAML")
    try:
        if p.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # only when a YAML file is used

            data = yaml.safe_load(text)
    except Exception as exc:  # every parser has its own error type
        raise ConfigError(
            "config", f"{path} is not valid {kind}: {_one_line(exc)}"
        ) from None
    if data is None:
        return {}
    _check_size(data, path)
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must contain a mapping at the top level")
    return data


# FreeBSD port net/ucarp rc.d script: rc.conf variable -> our field
RC_CONF_MAP = {
    "ucarp_if": "interface",
    "ucarp_src": "srcip",
    "ucarp_addr": "addr",
    "ucarp_vhid": "vhid",
    "ucarp_pass": "pass",
    "ucarp_passfile": "passfile",
    "ucarp_preempt": "preempt",
    "ucarp_shutdown": "shutdown",
    "ucarp_facility": "facility",
    "ucarp_xparam": "xparam",
    "ucarp_upscript": "upscript",
    "ucarp_downscript": "downscript",
    "ucarp_deadratio": "deadratio",
    "ucarp_advbase": "advbase",
    "ucarp_advskew": "advskew",
}
RC_CONF_IGNORED = {"ucarp_enable"}


def parse_rc_conf(text: str) -> tuple[dict[str, Any], list[str]]:
    """Parse shell-style `ucarp_*="value"` assignments; returns (fields, ucarp_flags argv).

    Lines that are not ucarp_* assignments are ignored, as rc.subr would for this
    service. `ucarp_flags` is returned separately and parsed like command-line flags.
    """
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export "):
            stripped = stripped[len("export ") :].strip()
        name, sep, rest = stripped.partition("=")
        if not sep or not name.startswith("ucarp_"):
            continue
        try:
            tokens = shlex.split(rest, comments=True)
        except ValueError as exc:
            raise ConfigError(
                f"rc.conf line {lineno} ({name})", f"bad shell quoting: {exc}"
            ) from None
        values[name.strip()] = tokens[0] if tokens else ""
    fields: dict[str, Any] = {}
    for name, value in values.items():
        if name in RC_CONF_IGNORED or name == "ucarp_flags":
            continue
        if name not in RC_CONF_MAP:
            raise ConfigError(
                name, f"unknown ucarp rc.conf variable; accepted: {', '.join(sorted(RC_CONF_MAP))}"
            )
        fields[RC_CONF_MAP[name]] = value
    # rc.d script: ucarp_vhid defaults to 1, ucarp_shutdown to YES
    fields.setdefault("vhid", "1")
    fields.setdefault("shutdown", "YES")
    for required in ("ucarp_if", "ucarp_src", "ucarp_addr"):
        if not values.get(required):
            raise ConfigError(required, "parameter required to start")
    return one_password(fields), shlex.split(values.get("ucarp_flags", ""))


@dataclass(frozen=True)
class ConfigRequest:
    """What one command line names: the files to read and the fields its flags set.
    Kept by the daemon so that a reload reads exactly the same sources again."""

    flags: Mapping[str, Any] = field(default_factory=dict)
    config_file: str | None = None  # --config (else VIP_SIDECAR_CONFIG)
    interfaces_file: str | None = None  # --from-interfaces, instead of a config file
    rc_conf: str | None = None  # --from-rc-conf


def assemble(request: ConfigRequest, environ: Mapping[str, str]) -> Config:
    """The configuration a request and an environment describe (raises ConfigError)."""
    file_path = request.config_file or environ.get(ENV_PREFIX + "CONFIG")
    imported: list[str] = []
    if request.interfaces_file:
        from vip_sidecar import interfaces_import  # it imports this module

        if file_path:
            raise ConfigError("from-interfaces", "cannot be combined with --config")
        file_data, imported = interfaces_import.load(request.interfaces_file)
    else:
        file_data = load_file(file_path) if file_path else {}
    rc_layer: dict[str, Any] = {}
    if request.rc_conf:
        rc_fields, rc_argv = parse_rc_conf(read_text_file(request.rc_conf, "from-rc-conf"))
        # ucarp_flags sit above the ucarp_* variables, below the real command line
        rc_layer = overlay(rc_fields, flagmod.parse_ucarp_flags(rc_argv, request.rc_conf))
    config = build_config(file_data, environ, rc_layer, request.flags)
    return dataclasses.replace(config, warnings=(*imported, *config.warnings))
