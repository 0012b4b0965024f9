"""An in-memory object store for the Kubernetes provider's clock-controlled unit tests.

TEST DOUBLE, kept on purpose: the unit tests drive the provider with a fake clock (a 10 s
lease expires in microseconds) and inject writes between its read and its write at an exact
point, which a real apiserver cannot do. Every behaviour over the wire is tested against the
real kube-apiserver (tests/k8s, tests/integration/test_kubernetes_*.py).

Not a Kubernetes implementation: it keeps Leases, Pods, Nodes and Events
in memory with the apiserver's optimistic concurrency (a cluster-wide resourceVersion,
409 Conflict on a stale one, 409 AlreadyExists on create), merge-patch of labels, and
the Lease/Event field validation that would make a real apiserver reject a request.
Everything else a real apiserver does is out of scope.
"""

from __future__ import annotations

import copy
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")

KINDS = {
    ("coordination.k8s.io", "leases"): ("Lease", "coordination.k8s.io/v1"),
    ("", "pods"): ("Pod", "v1"),
    ("", "nodes"): ("Node", "v1"),
    ("", "events"): ("Event", "v1"),
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def status(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


Key = tuple[str, str, str, str]  # group, resource, namespace ("" if cluster-scoped), name


@dataclass
class Change:
    """One persisted write, for tests that check history (who held the lease when)."""

    at: float
    verb: str
    key: Key
    obj: dict[str, Any]
    user: str


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386. For the label maps the provider patches, strategic merge is the same."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class Store:
    def __init__(self, clock: Callable[[], float] | None = None) -> None:
        import time

        self._clock = clock or time.time
        self._lock = threading.RLock()
        self._objects: dict[Key, dict[str, Any]] = {}
        self._rv = 100
        self.history: list[Change] = []

    # -- helpers -------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _not_found(self, key: Key) -> ApiError:
        group, resource, _, name = key
        return ApiError(404, "NotFound", f'{resource}{"." + group if group else ""} "{name}" '
                        "not found", {"name": name, "group": group, "kind": resource})

    def _stamp_new(self, key: Key, obj: dict[str, Any]) -> dict[str, Any]:
        group, resource, namespace, name = key
        kind, api_version = KINDS[(group, resource)]
        obj = copy.deepcopy(obj)
        obj["kind"], obj["apiVersion"] = kind, api_version
        meta = obj.setdefault("metadata", {})
        meta["name"] = name
        if namespace:
            meta["namespace"] = namespace
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return obj

    def _record(self, verb: str, key: Key, obj: dict[str, Any], user: str) -> None:
        self.history.append(Change(self._clock(), verb, key, copy.deepcopy(obj), user))

    # -- direct access for tests -----------------------------------------------------
    def put(self, group: str, resource: str, namespace: str, name: str,
            obj: dict[str, Any] | None = None) -> dict[str, Any]:
        key = (group, resource, namespace, name)
        with self._lock:
            stored = self._stamp_new(key, obj or {})
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = stored
            return copy.deepcopy(stored)

    def peek(self, group: str, resource: str, namespace: str, name: str
             ) -> dict[str, Any] | None:
        with self._lock:
            obj = self._objects.get((group, resource, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, group: str, resource: str, namespace: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(o) for (g, r, ns, _), o in sorted(self._objects.items())
                    if g == group and r == resource and ns == namespace]

    def delete(self, group: str, resource: str, namespace: str, name: str) -> None:
        with self._lock:
            self._objects.pop((group, resource, namespace, name), None)

    # -- API verbs -------------------------------------------------------------------
    def get(self, key: Key) -> dict[str, Any]:
        with self._lock:
            obj = self._objects.get(key)
            if obj is None:
                raise self._not_found(key)
            return copy.deepcopy(obj)

    def create(self, key: Key, body: dict[str, Any], *, dry_run: bool = False,
               user: str = "") -> dict[str, Any]:
        group, resource, namespace, name = key
        meta = body.get("metadata") or {}
        body_ns = meta.get("namespace")
        if body_ns and body_ns != namespace:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not "
                           "match the namespace sent on the request")
        if meta.get("resourceVersion"):
            raise ApiError(500, "InternalError",
                           "resourceVersion should not be set on objects to be created")
        self._validate(group, resource, name, body)
        with self._lock:
            if key in self._objects:
                raise ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists',
                               {"name": name, "group": group, "kind": resource})
            stored = self._stamp_new(key, body)
            if dry_run:
                return stored
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = stored
            self._record("create", key, stored, user)
            return copy.deepcopy(stored)

    def update(self, key: Key, body: dict[str, Any], *, dry_run: bool = False,
               user: str = "") -> dict[str, Any]:
        group, resource, _, name = key
        meta = body.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name "
                           "on the URL")
        self._validate(group, resource, name, body)
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise self._not_found(key)
            sent_rv = meta.get("resourceVersion")
            # Leases allow unconditional updates, like the real registry; ours are conditional
            if sent_rv and sent_rv != current["metadata"]["resourceVersion"]:
                raise ApiError(
                    409, "Conflict",
                    f'Operation cannot be fulfilled on {resource}.{group} "{name}": the object '
                    "has been modified; please apply your changes to the latest version and "
                    "try again", {"name": name, "group": group, "kind": resource})
            stored = copy.deepcopy(body)
            stored.setdefault("metadata", {})
            for k in ("uid", "creationTimestamp", "namespace", "name"):
                if k in current["metadata"]:
                    stored["metadata"][k] = current["metadata"][k]
            kind, api_version = KINDS[(group, resource)]
            stored["kind"], stored["apiVersion"] = kind, api_version
            if dry_run:
                return stored
            stored["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = stored
            self._record("update", key, stored, user)
            return copy.deepcopy(stored)

    def patch(self, key: Key, patch: dict[str, Any], *, dry_run: bool = False,
              user: str = "") -> dict[str, Any]:
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise self._not_found(key)
            if not isinstance(patch, dict):
                raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
            labels = ((patch.get("metadata") or {}).get("labels")) or {}
            for k, v in labels.items():
                self._check_label(k, v)
            merged = merge_patch(current, patch)
            for k in ("uid", "creationTimestamp", "namespace", "name", "resourceVersion"):
                if k in current["metadata"]:
                    merged["metadata"][k] = current["metadata"][k]
            if dry_run:
                return merged
            merged["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = merged
            self._record("patch", key, merged, user)
            return copy.deepcopy(merged)

    # -- validation (what would make the real apiserver say 400/422) -----------------
    def _validate(self, group: str, resource: str, name: str, body: dict[str, Any]) -> None:
        if not name or len(name) > 253 or not DNS_SUBDOMAIN.match(name):
            raise ApiError(422, "Invalid", f"metadata.name: Invalid value: {name!r}")
        if resource == "leases":
            spec = body.get("spec") or {}
            for f in ("acquireTime", "renewTime"):
                value = spec.get(f)
                if value is not None and not (isinstance(value, str) and MICROTIME.match(value)):
                    # the real decoder fails before validation: a 400, not a 422
                    raise ApiError(400, "BadRequest", f"spec.{f}: cannot parse {value!r} as "
                                   "MicroTime (RFC 3339 with 6 fractional digits)")
            d = spec.get("leaseDurationSeconds")
            if d is not None and (not isinstance(d, int) or isinstance(d, bool) or d <= 0):
                raise ApiError(422, "Invalid", "spec.leaseDurationSeconds: must be greater "
                               "than 0")
            t = spec.get("leaseTransitions")
            if t is not None and (not isinstance(t, int) or t < 0):
                raise ApiError(422, "Invalid", "spec.leaseTransitions: must be >= 0")
        if resource == "events":
            inv = body.get("involvedObject") or {}
            if not inv.get("kind") or not inv.get("name"):
                raise ApiError(422, "Invalid", "involvedObject: kind and name are required")
            if not body.get("reason") or not body.get("message"):
                raise ApiError(422, "Invalid", "reason and message are required")
            for f in ("firstTimestamp", "lastTimestamp"):
                value = body.get(f)
                if value is not None and not (isinstance(value, str) and TIME.match(value)):
                    raise ApiError(400, "BadRequest", f"{f}: cannot parse {value!r}")
            if body.get("type") not in (None, "Normal", "Warning"):
                raise ApiError(422, "Invalid", "type: must be Normal or Warning")
        labels = (body.get("metadata") or {}).get("labels") or {}
        for k, v in labels.items():
            self._check_label(k, v)

    @staticmethod
    def _check_label(key: str, value: Any) -> None:
        if value is None:
            return
        prefix, _, name = key.rpartition("/")
        if (not LABEL_NAME.match(name) or len(name) > 63
                or (prefix and not DNS_SUBDOMAIN.match(prefix))):
            raise ApiError(422, "Invalid", f"metadata.labels: Invalid value: {key!r}")
        if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
            raise ApiError(422, "Invalid", f"metadata.labels: Invalid value: {value!r}")
