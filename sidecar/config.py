"""One validated configuration model and its loaders.

Sources, lowest precedence first: built-in defaults, a YAML/TOML/JSON file (its
top-level VIP fields are defaults for every entry of `vips`), `VIP_SIDECAR_*`
environment variables, FreeBSD rc.conf `ucarp_*` variables, command-line flags. A
field set inside one `vips` entry always wins for that VIP.

Every problem raises ConfigError naming the field and what is accepted; the CLI prints
it on one line and exits 2.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vip_sidecar import fields, inet, parsing, unixsock
from vip_sidecar.inet import IPAddress
from vip_sidecar.providers import registry

ENV_PREFIX = "VIP_SIDECAR_"
LOG_FORMATS = ("text", "json")
SYSLOG_FACILITIES = (
    "auth authpriv cron daemon ftp kern lpr mail mark news security syslog user uucp "
    "local0 local1 local2 local3 local4 local5 local6 local7 none"
).split()


class ConfigError(ValueError):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field_name = field_name


@dataclass(frozen=True)
class ProviderSpec:
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = 30.0
    id: str = ""  # distinguishes two providers of one kind (e.g. two scripts)

    @property
    def label(self) -> str:
        return self.id or self.name


@dataclass(frozen=True)
class VipConfig:
    interface: str
    srcip: IPAddress
    vhid: int
    password: bytes
    addr: IPAddress
    addr_text: str  # scripts get the address as written (IPv6: compressed)
    name: str
    advbase: int = 1
    advskew: int = 0
    deadratio: int = 3
    preempt: bool = False
    neutral: bool = False
    mcast: IPAddress = inet.DEFAULT_GROUP4  # _make_vip picks ff02::12 for an IPv6 VIP
    nomcast: bool = False
    peers: tuple[IPAddress, ...] = ()
    upscript: str | None = None
    downscript: str | None = None
    xparam: str | None = None
    script_timeout: float = 30.0
    ignoreifstate: bool = False
    garp: bool = True
    replay_protection: bool = False
    real_mac: bool = False
    providers: tuple[ProviderSpec, ...] = ()

    @property
    def family(self) -> str:
        """'ipv4' or 'ipv6': every address of the entry has the VIP's family."""
        return inet.family(self.addr)


@dataclass(frozen=True)
class Config:
    vips: tuple[VipConfig, ...]
    shutdown: bool = True
    daemonize: bool = False
    facility: str = "daemon"
    debug: bool = False
    log_format: str = "text"
    http: str | None = None
    status_socket: str | None = None
    status_socket_group: int | None = None  # None: mode 0600; a gid: 0660 with that group
    shutdown_timeout: float = 10.0
    provider_hold_s: float = 2.0
    provider_hold_max_s: float = 60.0
    demote_step: int = 100
    syslog_socket: str = "/dev/log"
    warnings: tuple[str, ...] = ()


# ---------------------------------------------------------------------------- parsers
def read_passfile(path: str) -> bytes:
    """ucarp semantics: the first line, only its first '\\n' stripped (a '\\r' is kept)."""
    try:
        with open(path, "rb") as fh:
            line = fh.readline(511)
    except OSError as exc:
        raise ValueError(f"unable to open passfile {path} for reading: {exc.strerror}") from None
    if not line:
        raise ValueError(f"error reading passfile {path}: unexpected end of file")
    if line.endswith(b"\n"):
        line = line[:-1]
    return line


def _providers(value: Any) -> tuple[ProviderSpec, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(",", " ").split() if v]
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of provider names or mappings, got {value!r}")
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            specs.append(ProviderSpec(name=item))
            continue
        if not isinstance(item, Mapping) or "name" not in item:
            raise ValueError(f"entry {i} must be a name or a mapping with 'name', got {item!r}")
        opts = dict(item)
        name = str(opts.pop("name"))
        timeout = fields.seconds(opts.pop("timeout", 30.0))
        pid = str(opts.pop("id", ""))
        specs.append(ProviderSpec(name=name, options=opts, timeout=timeout, id=pid))
    labels = [s.label for s in specs]
    for label in labels:
        if labels.count(label) > 1:
            raise ValueError(f"provider {label!r} appears twice; give each one a distinct 'id'")
    for spec in specs:
        if not registry.is_known(spec.name):
            raise ValueError(
                f"unknown provider {spec.name!r}; accepted: {', '.join(registry.known_names())} "
                "or a dotted module path"
            )
    return tuple(specs)


# Per-VIP fields and the parser of each. Keys are the names used in files and in
# VIP_SIDECAR_<KEY>; "pass"/"passfile" become VipConfig.password.
VIP_FIELDS: dict[str, Callable[[Any], Any]] = {
    "interface": fields.interface_name,
    "srcip": fields.host_addresses,
    "vhid": parsing.integer(1, 255),
    "pass": fields.password,
    "passfile": parsing.text,
    "addr": fields.addr_text,
    "name": fields.vip_name,
    "advbase": parsing.integer(0, 255),
    # 255 is the bow-out value: at advbase 255 every advert would read as "leaving"
    # (the BSD kernels accept 0..254 too)
    "advskew": parsing.integer(0, 254),
    "deadratio": parsing.integer(1, None),
    "preempt": parsing.boolean,
    "neutral": parsing.boolean,
    "mcast": fields.multicast,
    "nomcast": parsing.boolean,
    "peers": fields.peers,
    "upscript": parsing.text,
    "downscript": parsing.text,
    "xparam": str,
    "script_timeout": fields.seconds,
    "ignoreifstate": parsing.boolean,
    "disable_garp": parsing.boolean,
    "replay_protection": parsing.boolean,
    "real_mac": parsing.boolean,
    "providers": _providers,
}

GLOBAL_FIELDS: dict[str, Callable[[Any], Any]] = {
    "shutdown": parsing.boolean,
    "daemonize": parsing.boolean,
    "facility": parsing.choice(tuple(SYSLOG_FACILITIES)),
    "debug": parsing.boolean,
    "log_format": parsing.choice(LOG_FORMATS),
    "http": fields.http_address,
    "status_socket": parsing.text,
    "status_socket_group": unixsock.parse_group,
    "shutdown_timeout": fields.seconds,
    "provider_hold_s": fields.seconds,
    "provider_hold_max_s": fields.seconds,
    "demote_step": parsing.integer(1, 255),
    "syslog_socket": parsing.text,
}

ALIASES = {"password": "pass", "mcastip": "mcast", "peer": "peers", "if": "interface"}


def _parse_fields(raw: Mapping[str, Any], where: str, allowed: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = parsing.normalise_key(key, ALIASES)
        shown = f"{where}{key.upper()}" if where == ENV_PREFIX else f"{where}{_key_text(key)}"
        if k not in allowed:
            raise ConfigError(shown, f"unknown field; accepted: {', '.join(sorted(allowed))}")
        parser = VIP_FIELDS.get(k) or GLOBAL_FIELDS[k]
        try:
            out[k] = parser(value)
        except ValueError as exc:
            raise ConfigError(shown, str(exc)) from None
    return out


def _key_text(key: Any) -> str:
    """A file's key as the error names it: as written when it reads as a name, else its
    repr (an empty key, a number, control characters or a colon, which ends the field's name in
    the error line, would make the field unreadable)."""
    text = str(key)
    if (isinstance(key, str) and text.strip() and text.isprintable() and ":" not in text
            and len(text) <= 64):
        return text
    return repr(key)[:64]


def load_env(environ: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """The VIP_SIDECAR_<FIELD> variables, and the names of the other VIP_SIDECAR_*
    variables, which are ignored: Kubernetes injects service links such as
    VIP_SIDECAR_SERVICE_HOST into every Pod when a Service of that name exists, and
    they must not stop the daemon."""
    known = set(VIP_FIELDS) | set(GLOBAL_FIELDS) | set(ALIASES)
    out: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name in known:
            out[name] = value
        else:
            ignored.append(key)
    return out, sorted(ignored)


# ---------------------------------------------------------------------------- assembly
PASSWORD_FIELDS = ("pass", "passfile")


def one_password(layer: Mapping[str, Any]) -> dict[str, Any]:
    """A layer that names both pass and passfile means the passfile (the FreeBSD rc.d
    script's rule, kept for every layer)."""
    out = dict(layer)
    if "passfile" in out:
        out.pop("pass", None)
    return out


def overlay(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """`upper`'s fields over `lower`'s. The one place that decides the password: the
    source a higher layer names (pass or passfile) replaces the lower one's entirely."""
    out = one_password(lower)
    top = one_password(upper)
    if any(k in top for k in PASSWORD_FIELDS):
        for k in PASSWORD_FIELDS:
            out.pop(k, None)
    out.update(top)
    return out


def build_config(
    file_data: Mapping[str, Any] | None = None,
    env: Mapping[str, Any] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Config:
    """Merge the layers (lowest first: file, the process environment's VIP_SIDECAR_*
    variables, overrides such as rc.conf, command-line flags; a `vips` entry above them
    all for its VIP) and validate everything. This is the one place that decides
    precedence; `overlay` decides it for pass/passfile."""
    file_data = dict(file_data or {})
    raw_vips = file_data.pop("vips", None)
    all_fields = set(VIP_FIELDS) | set(GLOBAL_FIELDS)
    common: dict[str, Any] = {}
    env_fields, ignored_env = load_env(env or {})
    layers = (("", file_data), (ENV_PREFIX, env_fields), ("", overrides or {}), ("", flags or {}))
    for where, layer in layers:
        common = overlay(common, _parse_fields(layer, where, all_fields))
    globals_ = {k: common.pop(k) for k in list(common) if k in GLOBAL_FIELDS}
    warnings: list[str] = []
    if ignored_env:
        warnings.append(
            f"ignoring environment variables that are not config fields: {', '.join(ignored_env)}"
        )
    if raw_vips is None:
        entries: list[dict[str, Any]] = [{}]
    elif isinstance(raw_vips, list) and raw_vips:
        entries = []
        for i, item in enumerate(raw_vips):
            if not isinstance(item, Mapping):
                raise ConfigError(f"vips[{i}]", "must be a mapping of VIP fields")
            entries.append(_parse_fields(item, f"vips[{i}].", set(VIP_FIELDS)))
    else:
        raise ConfigError("vips", "must be a non-empty list of VIP mappings")
    vips = tuple(
        _make_vip(overlay(common, entry), f"vips[{i}]." if raw_vips else "", warnings)
        for i, entry in enumerate(entries)
    )
    _check_unique(vips)
    return Config(vips=vips, warnings=tuple(warnings), **globals_)


def _make_vip(f: dict[str, Any], where: str, warnings: list[str]) -> VipConfig:
    for required, what in (
        ("interface", "a network interface name (-i/--interface)"),
        ("srcip", "this host's persistent source address (-s/--srcip)"),
        ("vhid", "a virtual host id 1..255 (-v/--vhid)"),
        ("addr", "the virtual IPv4 or IPv6 address (-a/--addr)"),
    ):
        if required not in f:
            raise ConfigError(where + required, f"missing; you must supply {what}")
    if "passfile" in f:
        try:
            password = fields.password(read_passfile(f["passfile"]))
        except ValueError as exc:
            raise ConfigError(where + "passfile", str(exc)) from None
        mode = os.stat(f["passfile"]).st_mode
        if mode & stat.S_IROTH:
            warnings.append(f"{where}passfile {f['passfile']} is readable by others")
    elif "pass" in f:
        password = f["pass"]
    else:
        raise ConfigError(
            where + "pass", "missing; supply a password with -p/--pass or -o/--passfile"
        )
    addr = parsing.ip_address(f["addr"])
    if isinstance(f["srcip"], tuple):
        # a dual-stack node's two addresses (status.hostIPs): this VIP uses its family's
        f = {**f, "srcip": next(ip for ip in f["srcip"] if ip.version == addr.version)}
    _check_family(f, addr, where)
    if addr == f["srcip"]:
        raise ConfigError(
            where + "addr", f"the VIP {addr} must differ from this node's srcip {f['srcip']}"
        )
    if addr.version == 4 and addr.is_link_local and not f["srcip"].is_link_local:
        # a 169.254/16 VIP is only reachable on its own link: useful only where the
        # node itself speaks link-local, never next to a routed srcip
        raise ConfigError(
            where + "addr",
            f"link-local VIP {addr} (169.254.0.0/16) needs a link-local srcip, "
            f"got {f['srcip']}",
        )
    advbase, advskew = f.get("advbase", 1), f.get("advskew", 0)
    if advbase == 0 and advskew == 0:
        raise ConfigError(where + "advbase", "advbase and advskew cannot both be 0")
    # one peer list for a whole DaemonSet contains every node, this one included
    peers = tuple(p for p in f.get("peers", ()) if p != f["srcip"])
    if f.get("peers") and not peers:
        raise ConfigError(where + "peers", f"lists only this node's own srcip {f['srcip']}")
    if addr in peers:
        raise ConfigError(where + "peers", f"lists the VIP {addr} itself; list the nodes' srcips")
    providers = f.get("providers")
    if providers is None:
        has_scripts = f.get("upscript") or f.get("downscript")
        providers = (ProviderSpec("script"),) if has_scripts else ()
    for script_field in ("upscript", "downscript"):
        script = f.get(script_field)
        if script and not os.access(script, os.X_OK):
            warnings.append(f"{where}{script_field} {script} is not an executable file (yet)")
        elif script and _writable_by_others(script):
            # it runs with the daemon's privileges: whoever can edit it owns the node
            warnings.append(f"{where}{script_field} {script} is writable by others")
    if not (f.get("upscript") or f.get("downscript")) and any(
        p.name == "script" for p in providers
    ):
        warnings.append(f"{where}providers: 'script' is listed but no upscript/downscript is set")
    return VipConfig(
        interface=f["interface"],
        srcip=f["srcip"],
        vhid=f["vhid"],
        password=password,
        addr=addr,
        addr_text=f["addr"],
        name=f.get("name", f"vhid{f['vhid']}"),
        advbase=advbase,
        advskew=advskew,
        deadratio=f.get("deadratio", 3),
        preempt=f.get("preempt", False),
        neutral=f.get("neutral", False),
        mcast=f.get("mcast", inet.default_group(addr)),
        nomcast=f.get("nomcast", False),
        peers=peers,
        upscript=f.get("upscript"),
        downscript=f.get("downscript"),
        xparam=f.get("xparam"),
        script_timeout=f.get("script_timeout", 30.0),
        ignoreifstate=f.get("ignoreifstate", False),
        garp=not f.get("disable_garp", False),
        replay_protection=f.get("replay_protection", False),
        real_mac=f.get("real_mac", False),
        providers=tuple(providers),
    )


def _check_family(f: dict[str, Any], addr: IPAddress, where: str) -> None:
    """One family per VIP entry: BSD's HMAC covers the vhid's addresses of both families,
    so a v4+v6 vhid of ours could not match it anyway; two entries (two vhids) are the
    dual-stack form, each with its own group, peers and srcip."""
    fam = inet.family(addr)
    hint = "one address family per VIP entry (dual-stack: two VIPs with two vhids)"
    for key in ("srcip", "mcast"):
        if key in f and f[key].version != addr.version:
            got = f"{f[key]} is {inet.family(f[key])}"
            raise ConfigError(where + key, f"{got} but the VIP {addr} is {fam}: {hint}")
    for peer in f.get("peers", ()):
        if peer.version != addr.version:
            got = f"{peer} is {inet.family(peer)}"
            raise ConfigError(where + "peers", f"{got} but the VIP {addr} is {fam}: {hint}")
    if addr.version == 6 and f.get("nomcast"):
        raise ConfigError(
            where + "nomcast",
            "IPv6 has no broadcast: use multicast (default ff02::12) or --peer for unicast",
        )


def _writable_by_others(path: str) -> bool:
    try:
        return bool(os.stat(path).st_mode & stat.S_IWOTH)
    except OSError:
        return False


def _check_unique(vips: tuple[VipConfig, ...]) -> None:
    seen: dict[tuple[str, int], int] = {}
    names: set[str] = set()
    for i, vip in enumerate(vips):
        key = (vip.interface, vip.vhid)
        if key in seen:
            raise ConfigError(
                f"vips[{i}].vhid",
                f"vhid {vip.vhid} on {vip.interface} is already used by vips[{seen[key]}]",
            )
        seen[key] = i
        if vip.name in names:
            raise ConfigError(f"vips[{i}].name", f"duplicate VIP name {vip.name!r}")
        names.add(vip.name)
