"""The EC2 client of the process and the one place every EC2 call goes through.

- One botocore client per (region, endpoint, retry/timeouts) for the whole process:
  clients are thread-safe and carry the retry quota and connection pool; sessions are
  not thread-safe, so each is used only to create its client, under a lock.
- botocore retries first (explicit mode and attempts, never the version's default);
  on top of that `Ec2Api.call` retries throttling and 5xx with its own backoff until
  the caller's deadline. Permission, credential and not-found errors are never retried.
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

from providers.aws.errors import (
    AwsRetryExhausted,
    Cause,
    classify,
    error_code,
    is_retryable,
    retry_attempts,
    translate,
)
from providers.aws.retry import AsyncSleep, Backoff, Clock
from sidecar.log import event


@dataclass(frozen=True)
class ClientSettings:
    region: str
    endpoint_url: str | None
    retry_mode: str
    max_attempts: int
    connect_timeout: float
    read_timeout: float


@dataclass
class SharedClient:
    client: Any
    credential_method: str | None


_CLIENTS: dict[ClientSettings, SharedClient] = {}
_CLIENTS_LOCK = threading.Lock()


def make_client(settings: ClientSettings) -> SharedClient:
    import boto3  # heavy: only a node that configures the aws provider pays for it
    from botocore.config import Config as BotoConfig

    session = boto3.session.Session(region_name=settings.region)
    config = BotoConfig(
        region_name=settings.region,
        retries={"mode": settings.retry_mode, "total_max_attempts": settings.max_attempts},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        user_agent_extra="vip-sidecar",
    )
    client = session.client("ec2", endpoint_url=settings.endpoint_url, config=config)
    creds = session.get_credentials()
    method = getattr(creds, "method", None) if creds is not None else None
    return SharedClient(client, method)


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
    ) -> None:
        self.client = client
        self.clock = clock
        self.sleep = sleep
        self.backoff = backoff or Backoff(initial=0.2, maximum=2.0)
        self.stats = CallStats()
        self.vip_name = vip_name

    async def call(
        self, op: str, deadline: float, context: str = "", **params: Any
    ) -> dict[str, Any]:
        """Call EC2 operation `op` (CamelCase, as in IAM), retrying throttling/5xx until
        `deadline` (clock units). Raises an AwsError subclass."""
        method = getattr(self.client, _snake(op))
        delays = self.backoff.delays()
        loop_retries = 0
        started = self.clock()
        botocore_retries = 0
        while True:
            self.stats.calls[op] += 1
            try:
                response: dict[str, Any] = await asyncio.to_thread(method, **params)
            except Exception as exc:
                kind = classify(exc)
                n = retry_attempts(exc)
                botocore_retries += n
                self.stats.botocore_retries[op] += n
                self.stats.errors[error_code(exc) or kind.value] += 1
                if kind is Cause.OTHER and error_code(exc) is None and not _is_botocore(exc):
                    raise  # a programming error, not an EC2 answer
                delay = next(delays)
                if is_retryable(kind) and self.clock() + delay < deadline:
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


def _is_botocore(exc: BaseException) -> bool:
    return any(c.__module__.startswith(("botocore", "urllib3")) for c in type(exc).__mro__)


def _snake(op: str) -> str:
    out = []
    for i, ch in enumerate(op):
        if ch.isupper() and i and not op[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)
