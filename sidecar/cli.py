"""`vip-sidecar run|status|check|version`.

`run` takes every ucarp 1.5.2 option with the same short and long names, so
`vip-sidecar -i eth0 -s 10.0.0.2 -v 1 -p secret -a 10.0.0.100` works like ucarp
(flags without a sub-command mean `run`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from vip_sidecar import config as cfgmod
from vip_sidecar import sources
from vip_sidecar.config import Config, ConfigError
from vip_sidecar.launch import EXIT_CONFIG, StartupError, open_everything, run
from vip_sidecar.providers import registry


def package_version() -> str:
    from vip_sidecar import __version__

    return __version__


class _UsageError(ValueError):
    pass


class _FlagParser(argparse.ArgumentParser):
    """Reports a bad option as an exception instead of printing a usage block and
    exiting: rc.conf's ucarp_flags become one config-error line naming the variable."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


class _OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes: one line and exit 2 (the full usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_CONFIG, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n"
        )


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
    (("--disable-garp",), "disable_garp", "flag", "do not send gratuitous ARPs"),
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
        for flags, dest, kind, help_text in table:
            action: Any = {"value": "store", "flag": "store_true"}.get(kind, kind)
            group.add_argument(
                *flags, dest=dest, action=action, default=argparse.SUPPRESS, help=help_text
            )


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="vip-sidecar",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vip-sidecar {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="elect a master and run providers on transitions")
    add_run_options(run)
    st = sub.add_parser("status", help="print the state of a running vip-sidecar")
    st.add_argument(
        "--socket", default=os.environ.get("VIP_SIDECAR_STATUS_SOCKET"), help="unix socket path"
    )
    st.add_argument("--url", default=None, help="http://HOST:PORT of the HTTP server")
    st.add_argument("--json", action="store_true", help="raw JSON")
    ck = sub.add_parser("check", help="validate the configuration and run provider preflights")
    add_run_options(ck)
    ck.add_argument(
        "--provider-check", dest="check_provider", default=None, help="only preflight this provider"
    )
    ctl = sub.add_parser(
        "ctl",
        help="operator control over the unix status socket: planned demotion, maintenance "
        "freeze, configuration reload",
    )
    ctl.add_argument(
        "action",
        choices=("demote", "maintenance-on", "maintenance-off", "reload"),
        help="reload: re-read the configuration without a flap (systemctl reload)",
    )
    ctl.add_argument("--vip", default="all", help="VIP name (default: all)")
    ctl.add_argument(
        "--hold", type=float, default=10.0, help="demote: seconds to stay BACKUP (default 10)"
    )
    ctl.add_argument(
        "--socket", default=os.environ.get("VIP_SIDECAR_STATUS_SOCKET"), help="unix socket path"
    )
    sub.add_parser("version", help="print the version")
    return parser


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """ucarp users type flags straight away; treat that as `run`."""
    args = list(argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        return ["run", *args]
    return args


def options_to_fields(ns: argparse.Namespace) -> dict[str, Any]:
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
            "check_provider",
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


def load_config(ns: argparse.Namespace, environ: dict[str, str]) -> Config:
    file_path = getattr(ns, "config", None) or environ.get(cfgmod.ENV_PREFIX + "CONFIG")
    imported: list[str] = []
    if getattr(ns, "interfaces_file", None):
        from vip_sidecar import interfaces_import

        if file_path:
            raise ConfigError("from-interfaces", "cannot be combined with --config")
        file_data, imported = interfaces_import.load(ns.interfaces_file)
    else:
        file_data = sources.load_file(file_path) if file_path else {}
    overrides: dict[str, Any] = {}
    rc_path = getattr(ns, "rc_conf", None)
    if rc_path:
        rc_fields, rc_flags = sources.parse_rc_conf(sources.read_text_file(rc_path, "from-rc-conf"))
        overrides.update(rc_fields)
        if rc_flags:
            flag_parser = _FlagParser(prog="ucarp_flags", add_help=False)
            add_run_options(flag_parser)
            try:
                overrides.update(options_to_fields(flag_parser.parse_args(rc_flags)))
            except _UsageError as exc:
                raise ConfigError(
                    f"{rc_path}: ucarp_flags",
                    f"{exc}; accepted: the options of `vip-sidecar run --help`",
                ) from None
    config = cfgmod.build_config(file_data, environ, overrides, options_to_fields(ns))
    return dataclasses.replace(config, warnings=(*imported, *config.warnings))


MAX_ERROR_CHARS = 500


def one_line(text: str) -> str:
    """An error message as ONE readable line: parser messages (PyYAML's) span several
    lines, and a value echoed back (an argument of 4000 digits) can be huge."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def config_error(exc: Exception) -> int:
    """Print a config error as one line and return the exit status."""
    print(f"vip-sidecar: config error: {one_line(str(exc))}", file=sys.stderr)
    return EXIT_CONFIG


def configure_ns(
    ns: argparse.Namespace, environ: Mapping[str, str]
) -> tuple[Config, dict[str, Any], str | None]:
    """Config and providers for `run`/`check` (raises ConfigError or ValueError)."""
    only: str | None = None
    if ns.command == "check" and getattr(ns, "providers", None):
        # `check --provider aws` selects which configured provider to preflight
        only = ns.providers[0]
        del ns.providers
    config = load_config(ns, dict(environ))
    from vip_sidecar.runtime import build_providers

    return config, build_providers(config), only


def configure(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[argparse.Namespace, Config, dict[str, Any]]:
    """What `run` and `check` do before starting anything: parse argv, merge the config
    layers, build the providers. Exits 2 with one line on stderr on any config error."""
    try:
        ns = build_parser().parse_args(normalise_argv(argv))
        config, providers, _ = configure_ns(ns, environ)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(config_error(exc)) from None
    return ns, config, providers


def main(argv: Sequence[str] | None = None) -> int:
    args = normalise_argv(sys.argv[1:] if argv is None else argv)
    if not args:
        build_parser().print_help()
        return 0
    ns = build_parser().parse_args(args)
    if ns.command == "version":
        print(f"vip-sidecar {package_version()}")
        return 0
    if ns.command == "ctl":
        from vip_sidecar.status_client import control

        return control(ns.socket, ns.action, ns.vip, ns.hold)
    if ns.command == "status":
        from vip_sidecar.status_client import print_status

        return print_status(ns.socket, ns.url, ns.json)
    try:
        config, providers, only = configure_ns(ns, os.environ)
        if ns.command == "run":
            # everything the host can refuse is checked before the first log line
            from vip_sidecar.preflight import check_host

            check_host(config)
            opened = open_everything(config)
    except (ConfigError, ValueError) as exc:
        return config_error(exc)
    except StartupError as exc:
        print(f"vip-sidecar: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_CONFIG
    if ns.command == "check":
        from vip_sidecar.preflight import run_checks

        return asyncio.run(run_checks(config, providers, only))
    def reload_config() -> tuple[Config, dict[str, Any]]:
        """`ctl reload`: the same command line and environment, read again."""
        from vip_sidecar.preflight import check_host

        fresh, fresh_providers, _ = configure_ns(ns, os.environ)
        check_host(fresh)
        return fresh, fresh_providers

    try:
        return run(config, providers, opened, reload_config)
    finally:
        for bound in opened.unix:
            bound.remove()


if __name__ == "__main__":
    sys.exit(main())
