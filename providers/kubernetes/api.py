"""Every Kubernetes API call the provider makes, declared once, and a thin async wrapper.

`API_CALLS` is the contract with the Helm chart's RBAC: the chart grants exactly these
(group, resource, verb) triples (nodes only when node labelling is on) and a test
compares the two. Each wrapper method names its triple and `_call` refuses anything
that is not in the table, so the table cannot silently drift from the code.

The official client is synchronous; each call runs in a worker thread with a hard
`_request_timeout`, so a hanging apiserver costs at most that long and never blocks
the event loop (adverts keep flowing). Responses are read as raw JSON (no model
deserialisation): the provider only needs a few fields and must not trip over
whatever newer fields an apiserver adds.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import urllib3

from vip_sidecar.providers.base import ErrorKind, ProviderError


@dataclass(frozen=True)
class ApiCall:
    group: str  # "" is the core group
    resource: str
    verb: str
    cluster_scoped: bool = False

    def __str__(self) -> str:
        return f"{self.verb} {self.resource}" + (f".{self.group}" if self.group else "")


LEASE_GET = ApiCall("coordination.k8s.io", "leases", "get")
LEASE_CREATE = ApiCall("coordination.k8s.io", "leases", "create")
LEASE_UPDATE = ApiCall("coordination.k8s.io", "leases", "update")
POD_GET = ApiCall("", "pods", "get")
POD_PATCH = ApiCall("", "pods", "patch")
EVENT_CREATE = ApiCall("", "events", "create")
EVENT_PATCH = ApiCall("", "events", "patch")  # count/lastTimestamp of a repeated Event
NODE_GET = ApiCall("", "nodes", "get", cluster_scoped=True)
NODE_PATCH = ApiCall("", "nodes", "patch", cluster_scoped=True)

#: namespaced calls: the chart's Role in the release namespace
NAMESPACED_CALLS: frozenset[ApiCall] = frozenset(
    {LEASE_GET, LEASE_CREATE, LEASE_UPDATE, POD_GET, POD_PATCH, EVENT_CREATE, EVENT_PATCH}
)
#: cluster-scoped calls, only made with `label_node: true`: the chart's ClusterRole
NODE_CALLS: frozenset[ApiCall] = frozenset({NODE_GET, NODE_PATCH})
API_CALLS: frozenset[ApiCall] = NAMESPACED_CALLS | NODE_CALLS

MERGE_PATCH = "application/merge-patch+json"


def rbac_triples(calls: frozenset[ApiCall] = API_CALLS) -> set[tuple[str, str, str]]:
    return {(c.group, c.resource, c.verb) for c in calls}


class ApiFailure(Enum):
    CONFLICT = "conflict"  # 409: someone else wrote first (or the object exists)
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"  # 401/403: credentials or RBAC
    INVALID = "invalid"  # 400/415/422: we sent something the apiserver rejects
    UNAVAILABLE = "unavailable"  # no answer, timeout, 429, 5xx: the outage case


#: a Retry-After longer than this is read as this: the provider's own deadlines decide
RETRY_AFTER_MAX_S = 60.0


class KubeApiError(ProviderError):
    def __init__(
        self,
        call: ApiCall,
        failure: ApiFailure,
        status: int,
        message: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{call}: {message}")
        self.call = call
        self.failure = failure
        self.status = status
        #: seconds the apiserver asked us to wait (429/503 Retry-After), if it did
        self.retry_after = retry_after
        # an apiserver that does not answer may answer later; a 403 or a 422 will not
        self.kind = ErrorKind.RETRYABLE if self.unavailable else ErrorKind.PERMANENT

    @property
    def unavailable(self) -> bool:
        return self.failure is ApiFailure.UNAVAILABLE


def api_error(call: ApiCall, exc: BaseException) -> KubeApiError:
    """Map whatever the client raised to what the provider decides on."""
    from kubernetes.client.exceptions import ApiException

    if isinstance(exc, ApiException):
        status = int(exc.status or 0)
        message = _status_message(exc) or f"HTTP {status} {exc.reason or ''}".strip()
        if status == 409:
            return KubeApiError(call, ApiFailure.CONFLICT, status, message)
        if status == 404:
            return KubeApiError(call, ApiFailure.NOT_FOUND, status, message)
        if status in (401, 403):
            return KubeApiError(call, ApiFailure.FORBIDDEN, status, message)
        if status in (400, 415, 422):  # 415: a body the server will never take
            return KubeApiError(call, ApiFailure.INVALID, status, message)
        # 0 = TLS or transport error inside the client, 429/5xx = overloaded or etcd down
        return KubeApiError(call, ApiFailure.UNAVAILABLE, status, message, retry_after(exc.headers))
    if isinstance(exc, TimeoutError):
        return KubeApiError(call, ApiFailure.UNAVAILABLE, 0, "timed out")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        reason = getattr(exc, "reason", None) or exc
        return KubeApiError(call, ApiFailure.UNAVAILABLE, 0, f"unreachable: {reason}")
    return KubeApiError(call, ApiFailure.UNAVAILABLE, 0, f"{type(exc).__name__}: {exc}")


def retry_after(headers: Any) -> float | None:
    """Retry-After in seconds (the apiserver sends delta-seconds), bounded; None if
    absent or not a number (an HTTP-date is not what an apiserver sends)."""
    try:
        value = headers.get("Retry-After") if headers is not None else None
        seconds = float(value) if value is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
    if seconds is None or seconds != seconds or seconds < 0:  # NaN or negative
        return None
    return min(seconds, RETRY_AFTER_MAX_S)


def _status_message(exc: Any) -> str | None:
    try:
        doc = json.loads(exc.body)
    except (TypeError, ValueError):
        return None
    if isinstance(doc, dict) and doc.get("message"):
        return f"HTTP {exc.status}: {doc['message']}"
    return None


class KubeApi:
    """The provider's view of the apiserver: the calls of API_CALLS, nothing else."""

    def __init__(self, api_client: Any, namespace: str, timeout_s: float) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.namespace = namespace
        self.timeout_s = timeout_s
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)

    async def _call(
        self, call: ApiCall, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> dict[str, Any]:
        if call not in API_CALLS:  # a new call needs a table entry and a chart change
            raise AssertionError(f"{call} is not declared in API_CALLS")
        kwargs["_request_timeout"] = self.timeout_s
        kwargs["_preload_content"] = False

        def run() -> dict[str, Any]:
            resp = fn(*args, **kwargs)
            try:
                doc = json.loads(resp.data or b"{}")
            finally:
                resp.release_conn()
            return doc if isinstance(doc, dict) else {}

        try:
            # the thread ends by itself at _request_timeout; wait_for is the backstop
            return await asyncio.wait_for(asyncio.to_thread(run), self.timeout_s + 1.0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise api_error(call, exc) from None

    @staticmethod
    def _dry(dry_run: bool) -> dict[str, str]:
        return {"dry_run": "All"} if dry_run else {}

    async def get_lease(self, name: str) -> dict[str, Any] | None:
        try:
            return await self._call(
                LEASE_GET, self.coordination.read_namespaced_lease, name, self.namespace
            )
        except KubeApiError as exc:
            if exc.failure is ApiFailure.NOT_FOUND:
                return None
            raise

    async def create_lease(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        return await self._call(
            LEASE_CREATE,
            self.coordination.create_namespaced_lease,
            self.namespace,
            body,
            **self._dry(dry_run),
        )

    async def update_lease(
        self, name: str, body: dict[str, Any], dry_run: bool = False
    ) -> dict[str, Any]:
        return await self._call(
            LEASE_UPDATE,
            self.coordination.replace_namespaced_lease,
            name,
            self.namespace,
            body,
            **self._dry(dry_run),
        )

    async def get_pod(self, name: str) -> dict[str, Any]:
        return await self._call(POD_GET, self.core.read_namespaced_pod, name, self.namespace)

    async def patch_pod_labels(
        self, name: str, labels: dict[str, str | None], dry_run: bool = False
    ) -> dict[str, Any]:
        # merge-patch touches only the keys we name: other labels are never replaced
        return await self._call(
            POD_PATCH,
            self.core.patch_namespaced_pod,
            name,
            self.namespace,
            {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH,
            **self._dry(dry_run),
        )

    async def get_node(self, name: str) -> dict[str, Any]:
        return await self._call(NODE_GET, self.core.read_node, name)

    async def patch_node_labels(
        self, name: str, labels: dict[str, str | None], dry_run: bool = False
    ) -> dict[str, Any]:
        return await self._call(
            NODE_PATCH,
            self.core.patch_node,
            name,
            {"metadata": {"labels": labels}},
            _content_type=MERGE_PATCH,
            **self._dry(dry_run),
        )

    async def create_event(self, body: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        return await self._call(
            EVENT_CREATE,
            self.core.create_namespaced_event,
            self.namespace,
            body,
            **self._dry(dry_run),
        )

    async def patch_event(self, name: str, changes: dict[str, Any]) -> dict[str, Any]:
        return await self._call(
            EVENT_PATCH,
            self.core.patch_namespaced_event,
            name,
            self.namespace,
            changes,
            _content_type=MERGE_PATCH,
        )

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)
