"""The EC2 client of the process and the one place every EC2 call goes through.

- One botocore client per (region, endpoint, retry/timeouts) for the whole process:
  clients are thread-safe and carry the retry quota and connection pool; sessions are
  not thread-safe, so each is used only to create its client, under a lock.
- Reads: botocore retries first (explicit mode and attempts, never the version's
  default); on top of that `Ec2Api.call` retries throttling and 5xx with its own backoff
  until the caller's deadline, and stops waiting for a read at the deadline.
- Mutating calls go through a second client with botocore retries off: a cancelled
  coroutine does not stop its worker thread, and botocore's hidden attempts (connect +
  read timeout each) could land a move long after the node stepped down. Our own loop
  retries them, each attempt only if one worst-case attempt still fits before the
  deadline and only while the node is still meant to own the VIP (`still_owner`).
- Permission, credential and not-found errors are never retried.
- boto3 is synchronous: calls run in worker threads so the event loop (and with it the
  CARP advertisements) never waits for EC2.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vip_sidecar.log import event
from vip_sidecar.providers.aws.errors import (
    AwsNotOwner,
    AwsRetryExhausted,
    Cause,
    classify,
    error_code,
    is_retryable,
    retry_attempts,
    translate,
)
from vip_sidecar.providers.aws.retry import AsyncSleep, Backoff, Clock


@dataclass(frozen=True)
class ClientSettings:
    region: str
    endpoint_url: str | None
    retry_mode: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float
    imds_endpoint: str | None = None  # for botocore's own credential fetch (IPv6 IMDS)

    @property
    def attempt_s(self) -> float:
        """The longest one HTTP attempt can take."""
        return self.connect_timeout + self.read_timeout


@dataclass
class SharedClient:
    client: Any
    credential_method: str | None
    once: Any = None  # the same endpoint without botocore retries (mutating calls)

    @property
    def mutating(self) -> Any:
        return self.once if self.once is not None else self.client


# how long the last read of a claim (the one polled at its deadline) may still take
READ_GRACE_S = 1.0

_CLIENTS: dict[ClientSettings, SharedClient] = {}
_CLIENTS_LOCK = threading.Lock()


def make_client(settings: ClientSettings) -> SharedClient:
    import boto3  # heavy: only a node that configures the aws provider pays for it
    import botocore.session
    from botocore.config import Config as BotoConfig

    core = botocore.session.get_session()
    for name, value in imds_config(settings.imds_endpoint).items():
        core.set_config_variable(name, value)
    session = boto3.session.Session(region_name=settings.region, botocore_session=core)

    def config(attempts: int) -> Any:
        return BotoConfig(
            region_name=settings.region,
            retries={"mode": settings.retry_mode, "total_max_attempts": attempts},
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            user_agent_extra="vip-sidecar",
        )

    client = session.client(
        "ec2", endpoint_url=settings.endpoint_url, config=config(settings.max_attempts)
    )
    once = session.client("ec2", endpoint_url=settings.endpoint_url, config=config(1))
    creds = session.get_credentials()
    method = getattr(creds, "method", None) if creds is not None else None
    return SharedClient(client, method, once)


def imds_config(endpoint: str | None) -> dict[str, str]:
    """botocore settings so that its own credential fetch (the instance role) uses the same
    IMDS as our discovery: on an IPv6-only host the IPv4 default never answers. Same
    effect as AWS_EC2_METADATA_SERVICE_ENDPOINT(_MODE) in the environment."""
    if endpoint is None or endpoint.rstrip("/") == "http://169.254.169.254":
        return {}
    out = {"ec2_metadata_service_endpoint": endpoint}
    if "[" in endpoint:  # a bracketed IPv6 literal, e.g. http://[fd00:ec2::254]
        out["ec2_metadata_service_endpoint_mode"] = "ipv6"
    return out


def shared_client(
    settings: ClientSettings, factory: Callable[[ClientSettings], SharedClient] = make_client
) -> SharedClient:
    """The process-wide client for these settings (created once, then reused)."""
    with _CLIENTS_LOCK:
        found = _CLIENTS.get(settings)
        if found is None:
            found = factory(settings)
            _CLIENTS[settings] = found
        return found


@dataclass
class CallStats:
    calls: Counter[str] = field(default_factory=Counter)
    botocore_retries: Counter[str] = field(default_factory=Counter)
    loop_retries: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)  # by error code / kind


class Ec2Api:
    def __init__(
        self,
        client: Any,
        *,
        clock: Clock = time.monotonic,
        sleep: AsyncSleep = asyncio.sleep,
        backoff: Backoff | None = None,
        vip_name: str = "",
        attempt_s: float = 0.0,
        mutating_client: Any = None,
    ) -> None:
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff or Backoff(initial=0.2, maximum=2.0)
        self.stats = CallStats()
        self.vip_name = vip_name
        # the longest one attempt of a mutating call can take; 0 when unknown (fakes)
        self.attempt_s = attempt_s
        self.mutating_client = mutating_client if mutating_client is not None else client
        # False once the node is no longer meant to own the VIP: no more mutating calls
        self.still_owner: Callable[[], bool] = lambda: True

    async def call(
        self, op: str, deadline: float, context: str = "", **params: Any
    ) -> dict[str, Any]:
        """Call EC2 operation `op` (CamelCase, as in IAM), retrying throttling/5xx until
        `deadline` (clock units). Raises an AwsError subclass."""
        mutating = is_mutating(op, params)
        method = getattr(self.mutating_client if mutating else self.client, _snake(op))
        delays = self.backoff.delays()
        loop_retries = 0
        started = self.clock()
        botocore_retries = 0
        while True:
            if mutating:
                self._may_mutate(op, context, deadline)
            self.stats.calls[op] += 1
            try:
                response: dict[str, Any] = await self._bounded(method, params, deadline, mutating)
            except Exception as exc:
                kind = classify(exc)
                n = retry_attempts(exc)
                botocore_retries += n
                self.stats.botocore_retries[op] += n
                self.stats.errors[error_code(exc) or kind.value] += 1
                if kind is Cause.OTHER and error_code(exc) is None and not _is_botocore(exc):
                    raise  # a programming error, not an EC2 answer
                delay = next(delays)
                # a mutating retry also needs room for its whole attempt before the deadline
                room = delay + (self.attempt_s if mutating else 0.0)
                if is_retryable(kind) and self.clock() + room < deadline:
                    loop_retries += 1
                    self.stats.loop_retries[op] += 1
                    event(
                        logging.WARNING,
                        f"EC2 {op} failed with {error_code(exc) or type(exc).__name__} "
                        f"after {n} botocore retries; retrying in {delay:.2f}s",
                        vip=self.vip_name,
                        event="aws_retry",
                        op=op,
                        kind=kind.value,
                        code=error_code(exc),
                        botocore_retries=n,
                        loop_retry=loop_retries,
                    )
                    await self.sleep(delay)
                    continue
                err = translate(exc, op, context)
                if isinstance(err, AwsRetryExhausted):
                    err = AwsRetryExhausted(
                        f"{err} ({botocore_retries} botocore retries, {loop_retries} "
                        f"provider retries, {self.clock() - started:.1f}s)",
                        code=err.code,
                        op=op,
                    )
                raise err from exc
            n = retry_attempts(response)
            botocore_retries += n
            self.stats.botocore_retries[op] += n
            if botocore_retries or loop_retries:
                event(
                    logging.INFO,
                    f"EC2 {op} succeeded after {botocore_retries} botocore retries and "
                    f"{loop_retries} provider retries",
                    vip=self.vip_name,
                    event="aws_call_retried",
                    op=op,
                    botocore_retries=botocore_retries,
                    loop_retries=loop_retries,
                    duration_s=round(self.clock() - started, 3),
                )
            return response


    def can_mutate_by(self, deadline: float) -> bool:
        """One attempt of a mutating call still ends before `deadline`."""
        return deadline - self.clock() >= self.attempt_s

    def _may_mutate(self, op: str, context: str, deadline: float) -> None:
        if not self.still_owner():
            self.stats.errors["not_owner"] += 1
            raise AwsNotOwner(
                f"{op} ({context}) not issued: this node is no longer MASTER", op=op
            )
        left = deadline - self.clock()
        if not self.can_mutate_by(deadline):
            # it could land after the deadline, i.e. after the runtime gave up on us
            raise AwsRetryExhausted(
                f"{op} ({context}) not issued: {left:.1f}s left before the deadline, one "
                f"attempt may take {self.attempt_s:g}s (connect + read timeout)",
                op=op,
            )

    async def _bounded(
        self, method: Any, params: dict[str, Any], deadline: float, mutating: bool
    ) -> dict[str, Any]:
        call = asyncio.to_thread(method, **params)
        if mutating:
            # bounded by construction (one attempt that fits); wait for its answer
            result: dict[str, Any] = await call
            return result
        # a read that outlives the deadline is abandoned (it changes nothing); the poll
        # that lands on the deadline still gets READ_GRACE_S to answer
        left = max(deadline - self.clock(), READ_GRACE_S)
        try:
            result = await asyncio.wait_for(call, timeout=left)
        except TimeoutError:
            raise _ReadTimeout(f"no answer before the deadline ({left:.1f}s)") from None
        return result


class _ReadTimeout(TimeoutError):
    """A read abandoned at the deadline (classified as transient by name)."""


def is_mutating(op: str, params: dict[str, Any]) -> bool:
    return not op.startswith("Describe") and not params.get("DryRun")


def _is_botocore(exc: BaseException) -> bool:
    return any(c.__module__.startswith(("botocore", "urllib3")) for c in type(exc).__mro__)


def _snake(op: str) -> str:
    out = []
    for i, ch in enumerate(op):
        if ch.isupper() and i and not op[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
