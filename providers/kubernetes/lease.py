"""Pure Lease logic for the Kubernetes provider: records, who may take them, and when.

Nothing here does I/O or reads a clock: callers pass the wall time (for the Lease's
MicroTime fields) and the monotonic time (for their own observations), so every rule
is tested without sleeping.

Expiry is judged by local observation only, as client-go's leader election does: a
lease of another holder is over when *we* have seen no change of its resourceVersion,
holder or renewTime for a whole leaseDurationSeconds on our own monotonic clock. The
record's timestamps are written by the holder's wall clock and are never compared with
ours: a backup whose clock runs ahead would otherwise take a lease its holder is still
renewing (measured before this rule: 6 s of skew was enough with a 4 s lease).

The holder never trusts wall clocks either: it counts its tenure on its monotonic clock
from the *start* of its last successful write. A peer's observation of that write
starts after the write reached the apiserver, so the peer's lease duration always ends
after the holder's; only the clocks' *rates* matter (NTP keeps them within ppm), never
their offset.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

#: annotations the holder writes on the Lease so a successor can fix the labels of a
#: holder that died without cleaning up (kill -9, node loss)
ANNOTATION_POD = "vip-sidecar.io/holder-pod"
ANNOTATION_NODE = "vip-sidecar.io/holder-node"
ANNOTATION_VIP = "vip-sidecar.io/vip"

_MICRO_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_DNS_LABEL_BAD = re.compile(r"[^a-z0-9-]+")
_LABEL_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]+")


def format_microtime(when: datetime) -> str:
    """metav1.MicroTime: RFC 3339 with exactly six fractional digits, UTC.

    The apiserver parses MicroTime with the layout "...05.000000Z07:00", which requires
    the fraction. The Python client turns our string into a datetime and writes it back
    with isoformat(), which drops a zero fraction: 1 in a million writes would be
    rejected with a 400. So a zero microsecond is nudged to 1 (1 us is far below any
    timing this provider cares about).
    """
    when = when.astimezone(UTC)
    if when.microsecond == 0:
        when = when.replace(microsecond=1)
    return when.strftime(_MICRO_FORMAT)


def format_time(when: datetime) -> str:
    """metav1.Time (Events): RFC 3339, whole seconds, UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: Any) -> datetime | None:
    """Parse metav1.Time/MicroTime as the apiserver writes them; None if absent/bad."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value)
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def dns_name(text: str, prefix: str = "") -> str:
    """A DNS-1123 subdomain-safe object name made from a VIP name (<= 253 chars)."""
    slug = _DNS_LABEL_BAD.sub("-", text.lower()).strip("-") or "vip"
    return (prefix + slug)[:253].rstrip("-")


def label_name(text: str) -> str:
    """The name part of a label key (<= 63 chars, alphanumeric at both ends)."""
    slug = _LABEL_NAME_BAD.sub("-", text).strip("-_.") or "vip"
    return slug[:63].rstrip("-_.")


@dataclass(frozen=True)
class LeaseRecord:
    """The fields of a coordination.k8s.io/v1 Lease that the provider reads and writes."""

    holder: str | None = None
    duration_s: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    resource_version: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: the object as read: a write starts from it, so what others put on the Lease
    #: (labels, ownerReferences, finalizers, spec fields we do not know) survives
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> LeaseRecord:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        duration = spec.get("leaseDurationSeconds")
        return cls(
            holder=spec.get("holderIdentity") or None,
            duration_s=int(duration) if duration is not None else None,
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=meta.get("resourceVersion"),
            annotations=dict(meta.get("annotations") or {}),
            raw=copy.deepcopy(dict(obj)),
        )

    def to_object(self, name: str, namespace: str) -> dict[str, Any]:
        """The full object for create/update. An update replaces the object, so it
        starts from the one we read and changes only the spec fields we own and our
        annotations; resourceVersion makes it conditional. managedFields is left out
        (the apiserver then keeps its own)."""
        meta: dict[str, Any] = copy.deepcopy(dict(self.raw.get("metadata") or {}))
        meta.pop("managedFields", None)
        meta.update(name=name, namespace=namespace)
        meta.pop("resourceVersion", None)
        if self.resource_version is not None:
            meta["resourceVersion"] = self.resource_version
        meta.pop("annotations", None)
        if self.annotations:
            meta["annotations"] = dict(self.annotations)
        spec: dict[str, Any] = copy.deepcopy(dict(self.raw.get("spec") or {}))
        spec["leaseTransitions"] = self.transitions
        owned = {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": None
            if self.acquire_time is None
            else format_microtime(self.acquire_time),
            "renewTime": None if self.renew_time is None else format_microtime(self.renew_time),
        }
        for key, value in owned.items():
            if value is None:
                spec.pop(key, None)
            else:
                spec[key] = value
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }


class Standing(Enum):
    ABSENT = "absent"  # no Lease object yet: create it
    FREE = "free"  # released (no holder): take it
    EXPIRED = "expired"  # another holder's term ran out: take it over
    MINE = "mine"  # we hold it: renew
    HELD = "held"  # another holder's term is running: wait or refuse


@dataclass(frozen=True)
class Verdict:
    standing: Standing
    #: seconds until a HELD lease may be taken (0 otherwise)
    remaining_s: float = 0.0
    detail: str = ""


Observed = tuple[str | None, str | None, datetime | None] | None


class LeaseObserver:
    """Remembers when we first saw the current record (monotonic), for client-go's
    skew-free expiry rule. Any change of resourceVersion, holder or renewTime restarts
    it; `now_mono` must be read *after* the GET returned, so the observation never
    starts before the write it shows."""

    def __init__(self) -> None:
        self.seen: Observed = None
        self.since: float = 0.0
        self.fresh = True

    def see(self, record: LeaseRecord | None, now_mono: float) -> float:
        key: Observed = (
            None if record is None else (record.resource_version, record.holder, record.renew_time)
        )
        if self.fresh or key != self.seen:
            self.seen = key
            self.since = now_mono
            self.fresh = False
        return self.since


def judge(
    record: LeaseRecord | None,
    me: str,
    *,
    now_mono: float,
    observed_since: float,
) -> Verdict:
    """May `me` take this Lease now? Only local observation ends another holder's term
    (see the module docstring); `now_wall` is not an argument on purpose."""
    if record is None:
        return Verdict(Standing.ABSENT, detail="no lease yet")
    if not record.holder:
        return Verdict(Standing.FREE, detail="released")
    if record.holder == me:
        return Verdict(Standing.MINE, detail="held by us")
    duration = record.duration_s or 0
    if duration <= 0:  # client-go reads a missing duration as already expired
        return Verdict(Standing.EXPIRED, detail=f"held by {record.holder} without a duration")
    remaining = observed_since + duration - now_mono
    if remaining <= 0:
        return Verdict(Standing.EXPIRED, detail=f"expired lease of {record.holder}")
    return Verdict(
        Standing.HELD,
        remaining_s=remaining,
        detail=f"held by {record.holder} (valid for {remaining:.1f}s more)",
    )


def acquired(
    record: LeaseRecord | None,
    me: str,
    *,
    now_wall: datetime,
    duration_s: int,
    annotations: Mapping[str, str],
) -> LeaseRecord:
    """The record to write to take (or keep) the Lease.

    leaseTransitions counts changes of holder, as client-go does: a new holder
    (including after a release) increments it, a renewal keeps it. It is the fencing
    epoch other providers may stamp on cloud resources.
    """
    merged = dict(record.annotations) if record is not None else {}
    merged.update(annotations)
    if record is None:
        return LeaseRecord(me, duration_s, now_wall, now_wall, 0, None, merged)
    if record.holder == me:
        return replace(
            record,
            duration_s=duration_s,
            renew_time=now_wall,
            acquire_time=record.acquire_time or now_wall,
            annotations=merged,
        )
    return replace(
        record,
        holder=me,
        duration_s=duration_s,
        acquire_time=now_wall,
        renew_time=now_wall,
        transitions=record.transitions + 1,
        annotations=merged,
    )


def released(record: LeaseRecord, *, now_wall: datetime) -> LeaseRecord:
    """Give the Lease up: no holder, so the next node takes it at once (client-go's
    ReleaseOnCancel writes the same). The holder annotations stay as history."""
    return replace(record, holder=None, renew_time=now_wall, duration_s=1)


class OutagePolicy(Enum):
    FAILSAFE = "failsafe"
    DEMOTE = "demote"


def outage_verdict(
    policy: OutagePolicy,
    *,
    now_mono: float,
    valid_until: float,
    decision_latency_s: float,
) -> tuple[bool, float]:
    """A renewal failed because the apiserver could not be reached: keep MASTER?

    Returns (keep, seconds of tenure left). `demote` never keeps. `failsafe` keeps as
    long as the lease we last wrote is still ours *at the next point we could decide
    again* (decision_latency_s from now): the VIP must be gone before a peer may take
    the lease, and we only get to act at the next check.
    """
    left = valid_until - now_mono
    if policy is OutagePolicy.DEMOTE:
        return False, left
    return left > decision_latency_s, left
