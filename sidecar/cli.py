"""`vip-sidecar run|status|check|version`.

`run` takes every ucarp 1.5.2 option with the same short and long names, so
`vip-sidecar -i eth0 -s 10.0.0.2 -v 1 -p secret -a 10.0.0.100` works like ucarp
(flags without a sub-command mean `run`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from sidecar import config as cfgmod
from sidecar.config import Config, ConfigError
from sidecar.log import event, setup

EXIT_CONFIG = 2


class StartupError(RuntimeError):
    """The environment refused something the config asked for (port in use...)."""


def package_version() -> str:
    try:
        return version("vip-sidecar")
    except PackageNotFoundError:
        return "0+unknown"


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


def add_run_options(p: argparse.ArgumentParser) -> None:
    S = argparse.SUPPRESS
    u = p.add_argument_group("ucarp-compatible options")
    u.add_argument("-i", "--interface", default=S, help="interface to use")
    u.add_argument("-s", "--srcip", default=S, help="this host's persistent source address")
    u.add_argument("-v", "--vhid", default=S, help="virtual host id 1..255")
    u.add_argument(
        "-p",
        "--pass",
        dest="pass",
        action=_PassAction,
        default=S,
        help="shared password (1..19 bytes)",
    )
    u.add_argument(
        "-o",
        "--passfile",
        dest="passfile",
        action=_PassAction,
        default=S,
        help="read the password from the first line of a file",
    )
    u.add_argument(
        "-P", "--preempt", action="store_true", default=S, help="become master as soon as possible"
    )
    u.add_argument(
        "-n",
        "--neutral",
        action="store_true",
        default=S,
        help="don't run the downscript at start-up",
    )
    u.add_argument("-a", "--addr", default=S, help="virtual IPv4 address")
    u.add_argument("-b", "--advbase", default=S, help="advertisement base, seconds (default 1)")
    u.add_argument("-k", "--advskew", default=S, help="advertisement skew 0..255 (default 0)")
    u.add_argument("-u", "--upscript", default=S, help="run when becoming master")
    u.add_argument("-d", "--downscript", default=S, help="run when becoming backup")
    u.add_argument("-r", "--deadratio", default=S, help="ratio for the dead interval (default 3)")
    u.add_argument("-D", "--debug", action="store_true", default=S, help="debug messages")
    u.add_argument(
        "-z",
        "--shutdown",
        action="store_true",
        default=S,
        help="run the down actions at exit (always done; accepted for ucarp)",
    )
    u.add_argument(
        "-B", "--daemonize", action="store_true", default=S, help="run in the background"
    )
    u.add_argument(
        "-S",
        "--ignoreifstate",
        action="store_true",
        default=S,
        help="ignore the interface carrier state",
    )
    u.add_argument(
        "-M",
        "--nomcast",
        action="store_true",
        default=S,
        help="broadcast adverts (ff:ff:ff:ff:ff:ff) instead of multicast",
    )
    u.add_argument(
        "-m",
        "--mcastip",
        "--mcast",
        dest="mcast",
        default=S,
        help="multicast group (default 224.0.0.18)",
    )
    u.add_argument("-f", "--facility", default=S, help="syslog facility (default daemon; none)")
    u.add_argument("-x", "--xparam", default=S, help="extra parameter for the scripts")
    x = p.add_argument_group("vip-sidecar extensions")
    x.add_argument(
        "--peer",
        dest="peers",
        action=_AppendPeer,
        default=S,
        help="unicast peer address (repeatable; disables multicast)",
    )
    x.add_argument(
        "--disable-garp",
        dest="disable_garp",
        action="store_true",
        default=S,
        help="do not send gratuitous ARPs",
    )
    x.add_argument(
        "--replay-protection",
        dest="replay_protection",
        action="store_true",
        default=S,
        help="drop adverts whose counter does not increase",
    )
    x.add_argument(
        "--real-mac",
        dest="real_mac",
        action="store_true",
        default=S,
        help="send adverts from the NIC MAC instead of 00:00:5e:00:00:<vhid>",
    )
    x.add_argument(
        "--script-timeout",
        dest="script_timeout",
        default=S,
        help="seconds before a hanging script is killed (default 30)",
    )
    x.add_argument(
        "--provider",
        dest="providers",
        action="append",
        default=S,
        help="provider to run on transitions (alias, aws, kubernetes, script)",
    )
    x.add_argument("--name", default=S, help="VIP name used in logs, metrics and labels")
    x.add_argument("--config", default=S, help="YAML/TOML/JSON config file (or VIP_SIDECAR_CONFIG)")
    x.add_argument(
        "--from-rc-conf",
        dest="rc_conf",
        default=S,
        help="read FreeBSD rc.conf ucarp_* variables from this file",
    )
    x.add_argument("--log-format", dest="log_format", default=S, choices=cfgmod.LOG_FORMATS)
    x.add_argument(
        "--http",
        default=S,
        help="serve /healthz /readyz /status /metrics on HOST:PORT or unix:/path",
    )
    x.add_argument(
        "--status-socket",
        dest="status_socket",
        default=S,
        help="unix socket for `vip-sidecar status` (HTTP)",
    )
    x.add_argument(
        "--shutdown-timeout",
        dest="shutdown_timeout",
        default=S,
        help="seconds allowed for the graceful exit (default 10)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
        help="operator control over the unix status socket: planned demotion, maintenance freeze",
    )
    ctl.add_argument("action", choices=("demote", "maintenance-on", "maintenance-off"))
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
    file_data = cfgmod.load_file(file_path) if file_path else {}
    overrides: dict[str, Any] = {}
    rc_path = getattr(ns, "rc_conf", None)
    if rc_path:
        try:
            with open(rc_path) as fh:
                rc_fields, rc_flags = cfgmod.parse_rc_conf(fh.read())
        except OSError as exc:
            raise ConfigError("from-rc-conf", f"cannot read {rc_path}: {exc.strerror}") from None
        overrides.update(rc_fields)
        if rc_flags:
            flag_parser = argparse.ArgumentParser(prog="ucarp_flags", add_help=False)
            add_run_options(flag_parser)
            try:
                overrides.update(options_to_fields(flag_parser.parse_args(rc_flags)))
            except SystemExit:
                raise ConfigError("ucarp_flags", f"invalid flags {rc_flags}") from None
    cli = options_to_fields(ns)
    if "pass" in cli or "passfile" in cli:
        overrides.pop("pass", None)
        overrides.pop("passfile", None)
    overrides.update(cli)
    return cfgmod.build_config(file_data, environ, overrides)


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
        from sidecar.status_client import control

        return control(ns.socket, ns.action, ns.vip, ns.hold)
    if ns.command == "status":
        from sidecar.status_client import print_status

        return print_status(ns.socket, ns.url, ns.json)
    only: str | None = None
    if ns.command == "check" and getattr(ns, "providers", None):
        # `check --provider aws` selects which configured provider to preflight
        only = ns.providers[0]
        del ns.providers
    try:
        config = load_config(ns, dict(os.environ))
        from sidecar.runtime import build_providers

        providers = build_providers(config)
    except (ConfigError, ValueError) as exc:
        print(f"vip-sidecar: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if ns.command == "check":
        from sidecar.preflight import run_checks

        return asyncio.run(run_checks(config, providers, only))
    return run(config, providers)


def run(config: Config, providers: dict[str, Any]) -> int:
    if config.daemonize:
        daemonize()
    for warning in setup(
        log_format=config.log_format,
        debug=config.debug,
        facility=config.facility,
        to_terminal=not config.daemonize,
        syslog_socket=config.syslog_socket,
    ):
        event(logging.ERROR, warning)
    for warning in config.warnings:
        event(logging.WARNING, f"Warning: {warning}", event="config_warning")
    for vip in config.vips:
        if not vip.upscript and not any(p.name != "script" for p in vip.providers):
            event(logging.WARNING, "Warning: no script called when going up", vip=vip.name)
        if not vip.downscript and not any(p.name != "script" for p in vip.providers):
            event(logging.WARNING, "Warning: no script called when going down", vip=vip.name)
    from sidecar.runtime import Runtime
    from sidecar.transport import TransportError

    async def main_async() -> int:
        runtime = Runtime(config, providers)
        server = None
        if config.http or config.status_socket:
            from sidecar.http import start_server

            try:
                server = await start_server(runtime, config.http, config.status_socket)
            except (OSError, ValueError, OverflowError) as exc:
                raise StartupError(
                    f"http: cannot serve on {config.http or ''} {config.status_socket or ''}: {exc}"
                ) from None
        try:
            await runtime.run()
        finally:
            if server is not None:
                await server.cleanup()
        return 0

    try:
        return asyncio.run(main_async())
    except (TransportError, StartupError) as exc:
        event(logging.ERROR, str(exc), event="fatal")
        print(f"vip-sidecar: {exc}", file=sys.stderr)
        return 2


def daemonize() -> None:
    """ucarp -B: double fork, new session, cwd /, stdio to /dev/null."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))


if __name__ == "__main__":
    sys.exit(main())
