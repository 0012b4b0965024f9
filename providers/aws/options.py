"""Validation of the aws provider's options (the `providers: [{name: aws, ...}]` mapping).

Every problem raises ProviderConfigError naming the option and what is accepted, so the
CLI can print one line and exit 2 before anything runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any
from urllib.parse import urlparse

from vip_sidecar import parsing
from vip_sidecar.providers.base import ProviderConfigError

MODES = ("secondary-ip", "eip", "route")
RETRY_MODES = ("standard", "adaptive", "legacy")

_ID_PATTERNS = {
    "instance_id": r"i-[0-9a-f]{8,17}",
    "eni_id": r"eni-[0-9a-f]{8,17}",
    "allocation_id": r"eipalloc-[0-9a-f]{8,17}",
    "route_table_id": r"rtb-[0-9a-f]{8,17}",
    "subnet_id": r"subnet-[0-9a-f]{8,17}",
}
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
# EC2 tag keys: letters, digits, spaces and + - = . _ : / @, at most 128 characters
_TAG_PREFIX = re.compile(r"^[A-Za-z0-9 +\-=._:/@]{1,80}$")


@dataclass(frozen=True)
class AwsOptions:
    mode: str
    region: str | None = None
    instance_id: str | None = None
    eni_id: str | None = None
    mac: str | None = None
    subnet_id: str | None = None
    private_ip: IPv4Address | None = None
    allocation_id: str | None = None
    public_ip: IPv4Address | None = None
    route_table_ids: tuple[str, ...] = ()
    endpoint_url: str | None = None
    imds_endpoint: str = "http://169.254.169.254"
    imds_timeout: float = 1.0
    imds_attempts: int = 3
    retry_mode: str = "standard"
    max_attempts: int = 3
    connect_timeout: float = 2.0
    read_timeout: float = 4.0
    verify_timeout: float = 20.0
    # a change by someone else must still show this much later before we undo it: EC2's
    # reads lag its writes, and a newer master's move can show before its claim does
    drift_confirm: float = 3.0
    # an emulator (moto) keeps a reassigned address on both ENIs and matches the address
    # filter on primaries only: list the subnet and remove the copies. Never on AWS.
    emulator_compat: bool = False
    reassert_interval: float | None = 15.0
    tag_prefix: str = "vip-sidecar/"
    fencing: bool = True
    verify_imds: bool = True

    @property
    def needs_imds(self) -> bool:
        return self.eni_id is None


def _id(kind: str) -> Callable[[Any], str]:
    pattern = re.compile(f"^{_ID_PATTERNS[kind]}$")
    example = _ID_PATTERNS[kind].split("-")[0] + "-0123456789abcdef0"

    def parse(value: Any) -> str:
        text = str(value).strip()
        if not pattern.match(text):
            raise ValueError(f"must look like {example}, got {value!r}")
        return text

    return parse


def _ids(kind: str) -> Callable[[Any], tuple[str, ...]]:
    one = _id(kind)

    def parse(value: Any) -> tuple[str, ...]:
        if isinstance(value, str):
            items = [v for v in value.replace(",", " ").split() if v]
        elif isinstance(value, list | tuple):
            items = [str(v) for v in value]
        else:
            raise ValueError(f"must be a list of ids, got {value!r}")
        if not items:
            raise ValueError("must list at least one id")
        out = tuple(one(v) for v in items)
        if len(set(out)) != len(out):
            raise ValueError("lists an id twice")
        return out

    return parse


def _region(value: Any) -> str:
    text = str(value).strip()
    if not _REGION.match(text):
        raise ValueError(f"must be an AWS region name like eu-west-1, got {value!r}")
    return text


def _mac(value: Any) -> str:
    text = str(value).strip().lower().replace("-", ":")
    if not _MAC.match(text):
        raise ValueError(f"must be a MAC address like 0a:1b:2c:3d:4e:5f, got {value!r}")
    return text


def _url(value: Any) -> str:
    text = str(value).strip()
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(
            f"must be an http(s) URL like https://ec2.eu-west-1.amazonaws.com, got {value!r}"
        )
    return text.rstrip("/")


def _interval(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("off", "none")):
        return None
    return _seconds(0.0, 3600.0)(value)


def _tag_prefix(value: Any) -> str:
    text = str(value)
    if not _TAG_PREFIX.match(text) or text.lower().startswith("aws:"):
        raise ValueError(
            "must be 1..80 characters of letters, digits, spaces and + - = . _ : / @, "
            f"not starting with aws:, got {value!r}"
        )
    return text


_ipv4 = parsing.ipv4
_choice = parsing.choice
_bool = parsing.boolean
_int = parsing.integer


def _seconds(lo: float, hi: float) -> Callable[[Any], float]:
    return parsing.number(lo, hi, unit="seconds", lo_open=True)


PARSERS: dict[str, Callable[[Any], Any]] = {
    "mode": _choice(MODES),
    "region": _region,
    "instance_id": _id("instance_id"),
    "eni_id": _id("eni_id"),
    "mac": _mac,
    "subnet_id": _id("subnet_id"),
    "private_ip": _ipv4,
    "allocation_id": _id("allocation_id"),
    "public_ip": _ipv4,
    "route_table_ids": _ids("route_table_id"),
    "endpoint_url": _url,
    "imds_endpoint": _url,
    "imds_timeout": _seconds(0.0, 30.0),
    "imds_attempts": _int(1, 10),
    "retry_mode": _choice(RETRY_MODES),
    "max_attempts": _int(1, 10),
    "connect_timeout": _seconds(0.0, 60.0),
    "read_timeout": _seconds(0.0, 120.0),
    "verify_timeout": _seconds(0.0, 600.0),
    "drift_confirm": _seconds(0.0, 300.0),
    "emulator_compat": _bool,
    "reassert_interval": _interval,
    "tag_prefix": _tag_prefix,
    "fencing": _bool,
    "verify_imds": _bool,
}
ALIASES = {
    "route_table_id": "route_table_ids",
    "route_tables": "route_table_ids",
    "endpoint": "endpoint_url",
    "network_interface_id": "eni_id",
}


_UNSET: Any = object()


def parse_options(raw: Mapping[str, Any], provider_timeout: float) -> AwsOptions:
    # the shared checker (vip_sidecar.parsing.OptionBag): one style for every provider
    bag = parsing.OptionBag("aws", raw, ProviderConfigError, ALIASES)
    taken = {key: bag.take(key, parse, _UNSET) for key, parse in PARSERS.items()}
    values = {key: value for key, value in taken.items() if value is not _UNSET}
    bag.finish()
    if "mode" not in values:
        raise bag.fail("mode", f"option mode is required; accepted: {', '.join(MODES)}")
    opts = AwsOptions(**values)
    _check_mode(opts)
    _check_timeouts(opts, provider_timeout)
    return opts


def _check_timeouts(opts: AwsOptions, provider_timeout: float) -> None:
    """The timeouts nest: one read (all botocore attempts) fits in verify_timeout, and a
    check (drift_confirm, then a claim of at most verify_timeout) fits in the provider
    timeout, so every call ends before the runtime gives up on the provider."""
    read_s = (opts.connect_timeout + opts.read_timeout) * opts.max_attempts
    if read_s > opts.verify_timeout:
        raise ProviderConfigError(
            f"aws.verify_timeout: (connect_timeout + read_timeout) x max_attempts ({read_s:g}s) "
            f"must not exceed verify_timeout ({opts.verify_timeout:g}s): one EC2 read with "
            "all of botocore's attempts must fit in a claim"
        )
    # + 1 s: the last read of a claim, polled at its deadline, may take that long
    check_s = opts.verify_timeout + opts.drift_confirm + 1.0
    if check_s >= provider_timeout:
        raise ProviderConfigError(
            f"aws.verify_timeout: verify_timeout + drift_confirm + 1s ({opts.verify_timeout:g}s + "
            f"{opts.drift_confirm:g}s + 1s) must be below the provider timeout "
            f"({provider_timeout:g}s) so a failed move is reported by the provider, not cut "
            "off by the pipeline"
        )
    if opts.reassert_interval is not None and opts.drift_confirm >= opts.reassert_interval:
        raise ProviderConfigError(
            f"aws.drift_confirm: drift_confirm ({opts.drift_confirm:g}s) must be below "
            f"reassert_interval ({opts.reassert_interval:g}s)"
        )


def _check_mode(opts: AwsOptions) -> None:
    def only(option: str, modes: tuple[str, ...]) -> None:
        if getattr(opts, option) not in (None, ()) and opts.mode not in modes:
            raise ProviderConfigError(
                f"aws.{option}: only used in mode {' / '.join(modes)} "
                f"(mode is {opts.mode})"
            )

    only("allocation_id", ("eip",))
    only("public_ip", ("eip",))
    only("private_ip", ("eip",))
    only("route_table_ids", ("route",))
    if opts.mode == "route" and not opts.route_table_ids:
        raise ProviderConfigError(
            "aws.route_table_ids: mode route needs route_table_ids (every route table whose "
            "subnets must reach the VIP)"
        )
    if opts.allocation_id and opts.public_ip:
        raise ProviderConfigError("aws.public_ip: give either allocation_id or public_ip, not both")
