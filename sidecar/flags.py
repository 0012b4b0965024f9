"""The options of `run` and `check`: ucarp 1.5.2's, with the same short and long names,
and vip-sidecar's extensions. The command line and rc.conf's `ucarp_flags` are parsed with
this one table into config fields (the `flags` of sources.ConfigRequest)."""

from __future__ import annotations

import argparse
from typing import Any, NoReturn

from vip_sidecar.config import ConfigError
from vip_sidecar.providers import registry


class _UsageError(ValueError):
    pass


class _FlagParser(argparse.ArgumentParser):
    """Reports a bad option as an exception instead of printing a usage block and
    exiting: rc.conf's ucarp_flags become one config-error line naming the variable."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _PassAction(argparse.Action):
    """-p/-o: the later one wins, like ucarp."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        ns.pass_source = ("passfile" if self.dest == "passfile" else "pass", values)


class _AppendPeer(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        ns: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = list(getattr(ns, "peers", None) or [])
        current.extend(v for v in str(values).replace(",", " ").split() if v)
        ns.peers = current


# ucarp 1.5.2's options, same short and long names: (flags, dest, kind, help).
# kind: "value" takes an argument, "flag" is a switch, or an argparse Action class.
UCARP_OPTIONS: list[tuple[tuple[str, ...], str, Any, str]] = [
    (("-i", "--interface"), "interface", "value", "interface to use"),
    (
        ("-s", "--srcip"),
        "srcip",
        "value",
        "this host's persistent source address (IPv6: link-local or global)",
    ),
    (("-v", "--vhid"), "vhid", "value", "virtual host id 1..255"),
    (("-p", "--pass"), "pass", _PassAction, "shared password (1..19 bytes)"),
    (("-o", "--passfile"), "passfile", _PassAction, "read the password from a file's first line"),
    (("-P", "--preempt"), "preempt", "flag", "become master as soon as possible"),
    (("-n", "--neutral"), "neutral", "flag", "don't run the downscript at start-up"),
    (("-a", "--addr"), "addr", "value", "virtual IPv4 or IPv6 address (one family per VIP)"),
    (("-b", "--advbase"), "advbase", "value", "advertisement base, seconds (default 1)"),
    (("-k", "--advskew"), "advskew", "value", "advertisement skew 0..254 (default 0)"),
    (("-u", "--upscript"), "upscript", "value", "run when becoming master"),
    (("-d", "--downscript"), "downscript", "value", "run when becoming backup"),
    (("-r", "--deadratio"), "deadratio", "value", "ratio for the dead interval (default 3)"),
    (("-D", "--debug"), "debug", "flag", "debug messages"),
    (
        ("-z", "--shutdown"),
        "shutdown",
        "flag",
        "run the down actions at exit (always done; accepted for ucarp)",
    ),
    (("-B", "--daemonize"), "daemonize", "flag", "run in the background"),
    (("-S", "--ignoreifstate"), "ignoreifstate", "flag", "ignore the interface carrier state"),
    (
        ("-M", "--nomcast"),
        "nomcast",
        "flag",
        "broadcast adverts (ff:ff:ff:ff:ff:ff) instead of multicast",
    ),
    (
        ("-m", "--mcastip", "--mcast"),
        "mcast",
        "value",
        "multicast group (default 224.0.0.18, for an IPv6 VIP ff02::12)",
    ),
    (("-f", "--facility"), "facility", "value", "syslog facility (default daemon; none)"),
    (("-x", "--xparam"), "xparam", "value", "extra parameter for the scripts"),
]

EXTENSION_OPTIONS: list[tuple[tuple[str, ...], str, Any, str]] = [
    (("--peer",), "peers", _AppendPeer, "unicast peer address (repeatable; disables multicast)"),
    (
        ("--disable-garp",),
        "disable_garp",
        "flag",
        "send no gratuitous ARPs (IPv6: no neighbour adverts)",
    ),
    (
        ("--replay-protection",),
        "replay_protection",
        "flag",
        "drop adverts whose counter does not increase",
    ),
    (
        ("--real-mac",),
        "real_mac",
        "flag",
        "send adverts from the NIC MAC instead of 00:00:5e:00:00:<vhid>",
    ),
    (
        ("--script-timeout",),
        "script_timeout",
        "value",
        "seconds before a hanging script is killed (default 30)",
    ),
    (
        ("--provider",),
        "providers",
        "append",
        f"provider to run on transitions ({', '.join(registry.BUILTINS)}, or installed ones)",
    ),
    (("--name",), "name", "value", "VIP name used in logs, metrics and labels"),
    (("--config",), "config", "value", "YAML/TOML/JSON config file (or VIP_SIDECAR_CONFIG)"),
    (
        ("--from-rc-conf",),
        "rc_conf",
        "value",
        "read FreeBSD rc.conf ucarp_* variables from this file",
    ),
    (
        ("--from-interfaces",),
        "interfaces_file",
        "value",
        "run the ucarp-* stanzas of a Debian /etc/network/interfaces (instead of --config)",
    ),
    (("--log-format",), "log_format", "value", "text (default) or json"),
    (
        ("--http",),
        "http",
        "value",
        "serve /healthz /readyz /status /metrics on HOST:PORT or unix:/path",
    ),
    (
        ("--status-socket",),
        "status_socket",
        "value",
        "unix socket for `vip-sidecar status` and `ctl`",
    ),
    (
        ("--status-socket-group",),
        "status_socket_group",
        "value",
        "group allowed to use the status socket (mode 0660); default: owner only (0600)",
    ),
    (
        ("--shutdown-timeout",),
        "shutdown_timeout",
        "value",
        "seconds allowed for the graceful exit (default 10)",
    ),
]


def add_run_options(p: argparse.ArgumentParser) -> None:
    # SUPPRESS: only options actually given override the lower config layers
    for title, table in (
        ("ucarp-compatible options", UCARP_OPTIONS),
        ("vip-sidecar extensions", EXTENSION_OPTIONS),
    ):
        group = p.add_argument_group(title)
        for names, dest, kind, help_text in table:
            action: Any = {"value": "store", "flag": "store_true"}.get(kind, kind)
            group.add_argument(
                *names, dest=dest, action=action, default=argparse.SUPPRESS, help=help_text
            )


def options_to_fields(ns: argparse.Namespace) -> dict[str, Any]:
    """The config fields a parsed command line sets (only the options given: the
    table's defaults are SUPPRESS); -p/-o become the one password source named last."""
    fields = {
        k: v
        for k, v in vars(ns).items()
        if k
        not in (
            "command",
            "config",
            "rc_conf",
            "interfaces_file",
            "pass_source",
            "socket",
            "url",
            "json",
            "pass",
            "passfile",
        )
    }
    source = getattr(ns, "pass_source", None)
    if source:
        fields[source[0]] = source[1]
    return fields


def parse_ucarp_flags(argv: list[str], rc_path: str) -> dict[str, Any]:
    """rc.conf's `ucarp_flags`, parsed like the command line; a bad option is one
    config-error line naming the file and the variable."""
    if not argv:
        return {}
    parser = _FlagParser(prog="ucarp_flags", add_help=False)
    add_run_options(parser)
    try:
        return options_to_fields(parser.parse_args(argv))
    except _UsageError as exc:
        raise ConfigError(
            f"{rc_path}: ucarp_flags",
            f"{exc}; accepted: the options of `vip-sidecar run --help`",
        ) from None
