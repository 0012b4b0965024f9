"""A small IMDSv2 client (stdlib only): token PUT, GETs with the token, token cache.

botocore has no public API for instance id / ENI lookups, and its internal fetcher
silently falls back to IMDSv1 when the token PUT times out. This client never does:
a token PUT that times out is reported as what it almost always is on EKS, a hop
limit of 1 for a pod that is not in the node's network namespace.

Synchronous on purpose: it is called from worker threads (asyncio.to_thread) during
init and preflight, never in the advertisement loop.
"""

from __future__ import annotations

import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
DEFAULT_ENDPOINT = "http://169.254.169.254"
DEFAULT_TOKEN_TTL_S = 21600
# renew well before expiry: a token that dies between our check and IMDS's is a 401
TOKEN_RENEW_MARGIN_S = 300.0

# (method, url, headers, timeout) -> (HTTP status, body); raises TimeoutError / OSError
Transport = Callable[[str, str, dict[str, str], float], tuple[int, bytes]]


# the region is the zone name's leading <area>-<direction>-<n>: us-east-1a, the Local Zone
# us-west-2-lax-1a and the Wavelength zone us-east-1-wl1-bos-wlz-1 all lie in a region
# that a bare "drop the last letter" gets wrong for the latter two
_REGION_PREFIX = re.compile(r"^[a-z]{2}(?:-[a-z]+)+-\d+")


def region_of_zone(zone: str) -> str:
    """The region of an availability / Local / Wavelength zone name ("" stays "")."""
    found = _REGION_PREFIX.match(zone)
    return found.group(0) if found else zone


class ImdsError(Exception):
    pass


class ImdsNotFound(ImdsError):
    pass


class ImdsTokenTimeout(ImdsError):
    """The token PUT never answered: typically the PUT response hop limit is too low."""


def urllib_transport(
    method: str, url: str, headers: dict[str, str], timeout: float
) -> tuple[int, bytes]:
    # IMDS is link-local: an HTTP(S)_PROXY from the pod environment must never see it
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    data = b"" if method == "PUT" else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with opener.open(req, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read() if exc.fp is not None else b""
        return int(exc.code), body
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError | socket.timeout):
            raise TimeoutError(str(exc.reason)) from None
        raise OSError(f"{exc.reason}") from None


@dataclass
class ImdsStats:
    token_refetches_on_401: int = 0
    last_token_put_s: float | None = None


@dataclass
class ImdsClient:
    endpoint: str = DEFAULT_ENDPOINT
    timeout: float = 1.0
    attempts: int = 3
    token_ttl: int = DEFAULT_TOKEN_TTL_S
    backoff_s: float = 0.2
    transport: Transport = urllib_transport
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    stats: ImdsStats = field(default_factory=ImdsStats)
    _token: str | None = field(default=None, init=False, repr=False)
    _token_expires: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.endpoint = self.endpoint.rstrip("/")
        if not 1 <= self.token_ttl <= 21600:
            raise ValueError("IMDS token TTL must be 1..21600 seconds")

    # -- token -------------------------------------------------------------------------
    def token(self) -> str:
        now = self.clock()
        if self._token is not None and now < self._token_expires - self._renew_margin():
            return self._token
        return self._fetch_token()

    def _renew_margin(self) -> float:
        return min(TOKEN_RENEW_MARGIN_S, self.token_ttl / 10)

    def invalidate(self) -> None:
        self._token = None
        self._token_expires = 0.0

    def _fetch_token(self) -> str:
        url = self.endpoint + TOKEN_PATH
        headers = {TOKEN_TTL_HEADER: str(self.token_ttl)}
        timeouts = 0
        last: str = ""
        for attempt in range(self.attempts):
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            start = self.clock()
            try:
                status, body = self.transport("PUT", url, headers, self.timeout)
            except TimeoutError:
                timeouts += 1
                last = f"timed out after {self.timeout:g}s"
                continue
            except OSError as exc:
                last = f"connection failed: {exc}"
                continue
            self.stats.last_token_put_s = self.clock() - start
            if status == 200 and body.strip():
                self._token = body.decode().strip()
                self._token_expires = start + self.token_ttl
                return self._token
            last = f"HTTP {status}"
            if status in (400, 403, 404, 405):
                # a definitive answer (IMDS disabled, v2 off, PUT with X-Forwarded-For)
                break
        if timeouts == self.attempts:
            raise ImdsTokenTimeout(
                f"IMDSv2 token PUT to {url} {last} ({self.attempts} attempts): the instance "
                "metadata PUT response hop limit is probably 1 while this process runs in its "
                "own network namespace - use hostNetwork: true, or raise "
                "HttpPutResponseHopLimit to 2 (aws ec2 modify-instance-metadata-options)"
            )
        raise ImdsError(f"IMDSv2 token PUT to {url} failed: {last}")

    # -- reads -------------------------------------------------------------------------
    def get(self, path: str) -> str:
        """GET /latest/<path> with the token; on 401 the token is refetched once."""
        url = f"{self.endpoint}/latest/{path.lstrip('/')}"
        refetched = False
        last = ""
        attempt = 0
        while attempt < self.attempts:
            if attempt:
                self.sleep(self.backoff_s * 2 ** (attempt - 1))
            token = self.token()
            try:
                status, body = self.transport("GET", url, {TOKEN_HEADER: token}, self.timeout)
            except TimeoutError:
                last = f"timed out after {self.timeout:g}s"
                attempt += 1
                continue
            except OSError as exc:
                last = f"connection failed: {exc}"
                attempt += 1
                continue
            if status == 200:
                return body.decode()
            if status == 401 and not refetched:
                # expired or revoked token (IMDS restarted, TTL shorter than we think)
                self.stats.token_refetches_on_401 += 1
                self.invalidate()
                refetched = True
                continue
            if status == 404:
                raise ImdsNotFound(f"IMDS has no {path}")
            last = f"HTTP {status}"
            if status < 500:
                break
            attempt += 1
        raise ImdsError(f"IMDS GET {path} failed: {last}")

    def get_optional(self, path: str) -> str | None:
        try:
            return self.get(path)
        except ImdsNotFound:
            return None

    # -- what the provider needs ---------------------------------------------------------
    def instance_id(self) -> str:
        return self.get("meta-data/instance-id").strip()

    def region(self) -> str:
        region = self.get_optional("meta-data/placement/region")
        if region and region.strip():
            return region.strip()
        az = self.get("meta-data/placement/availability-zone").strip()
        return region_of_zone(az)

    def mac_path(self, mac: str, leaf: str) -> str:
        return f"meta-data/network/interfaces/macs/{mac.lower()}/{leaf}"

    def interface(self, mac: str) -> dict[str, str | None]:
        """What IMDS knows about the ENI with this MAC; KeyError-free (None if absent)."""
        eni = self.get_optional(self.mac_path(mac, "interface-id"))
        if eni is None:
            raise ImdsNotFound(f"no ENI with MAC {mac} on this instance")
        out: dict[str, str | None] = {"interface-id": eni.strip()}
        for leaf in (
            "subnet-id",
            "vpc-id",
            "local-ipv4s",
            "subnet-ipv4-cidr-block",
            "vpc-ipv4-cidr-blocks",
            "subnet-ipv6-cidr-blocks",
            "vpc-ipv6-cidr-blocks",
        ):
            value = self.get_optional(self.mac_path(mac, leaf))
            out[leaf] = value.strip() if value is not None else None
        return out


def interface_mac(ifname: str, sysfs: str = "/sys/class/net") -> str:
    """The MAC of a Linux interface (in this network namespace)."""
    try:
        with open(f"{sysfs}/{ifname}/address") as fh:
            return fh.read().strip().lower()
    except OSError as exc:
        raise ImdsError(f"cannot read the MAC of interface {ifname}: {exc.strerror}") from None
