"""`vip-sidecar run|status|check|version`.

`run` takes every ucarp 1.5.2 option with the same short and long names, so
`vip-sidecar -i eth0 -s 10.0.0.2 -v 1 -p secret -a 10.0.0.100` works like ucarp
(flags without a sub-command mean `run`).

Addresses may also be IPv6 (`-s fe80::1 -a 2001:db8::100`): one address family per
VIP, a dual-stack service is two VIPs with two vhids. IPv6 adverts go to ff02::12 (or
--mcast, or the --peer addresses) from the --srcip address, which should be the
interface's link-local address for multicast, as the BSD kernels send them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from vip_sidecar import flags, launch, sources
from vip_sidecar.config import ConfigError
from vip_sidecar.launch import EXIT_CONFIG, StartupError, open_everything


def package_version() -> str:
    from vip_sidecar import __version__

    return __version__


class _OneLineParser(argparse.ArgumentParser):
    """Command-line mistakes: one line and exit 2 (the full usage is in --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_CONFIG, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n"
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
    flags.add_run_options(run)
    st = sub.add_parser("status", help="print the state of a running vip-sidecar")
    st.add_argument(
        "--socket", default=os.environ.get("VIP_SIDECAR_STATUS_SOCKET"), help="unix socket path"
    )
    st.add_argument("--url", default=None, help="http://HOST:PORT of the HTTP server")
    st.add_argument("--json", action="store_true", help="raw JSON")
    ck = sub.add_parser("check", help="validate the configuration and run provider preflights")
    flags.add_run_options(ck)
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


def config_request(ns: argparse.Namespace) -> sources.ConfigRequest:
    """What a `run`/`check` command line names, for the one config path."""
    return sources.ConfigRequest(
        flags=flags.options_to_fields(ns),
        config_file=getattr(ns, "config", None),
        interfaces_file=getattr(ns, "interfaces_file", None),
        rc_conf=getattr(ns, "rc_conf", None),
    )


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
    only: str | None = None
    if ns.command == "check" and getattr(ns, "providers", None):
        # `check --provider aws` selects which configured provider to preflight
        only = ns.providers[0]
        del ns.providers
    req = config_request(ns)
    try:
        config, providers = launch.configure(req, os.environ)
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
    try:
        return launch.run(config, providers, opened, launch.reloader(req, os.environ))
    finally:
        for bound in opened.unix:
            bound.remove()


if __name__ == "__main__":
    sys.exit(main())
