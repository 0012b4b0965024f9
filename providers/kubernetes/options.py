"""The kubernetes provider's options, validated once at start-up."""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vip_sidecar import parsing
from vip_sidecar.config import ProviderSpec, VipConfig
from vip_sidecar.providers.base import ProviderConfigError
from vip_sidecar.providers.kubernetes.api import NAMESPACED_CALLS, NODE_CALLS, ApiCall
from vip_sidecar.providers.kubernetes.lease import OutagePolicy, dns_name, label_name

LABEL_PREFIX = "vip-sidecar.io/"
#: how often a node waiting for another holder's term to end re-reads the Lease
POLL_S = 0.5
#: check() runs at least this often while MASTER: between renewals it only compares
#: the clock with our term, and a fine grain lets the failsafe decide close to its end
CHECK_TICK_S = 1.0


@dataclass(frozen=True)
class Options:
    lease_name: str
    namespace: str | None
    kubeconfig: str | None
    context: str | None
    identity: str
    pod_name: str | None
    node_name: str | None
    lease_duration: int
    renew_interval: float
    request_timeout: float
    acquire_wait: float
    #: seconds pre_master may spend in all (transient errors are retried within it);
    #: a request is only started if it ends, timeout included, inside it
    acquire_budget: float
    apiserver_outage: OutagePolicy
    label_pod: bool
    label_node: bool
    label_key: str
    events: bool

    @property
    def tick_s(self) -> float:
        """How often check() runs while MASTER (the provider's reassert_interval)."""
        return min(self.renew_interval, CHECK_TICK_S)

    @property
    def calls(self) -> frozenset[ApiCall]:
        """The API calls this configuration makes (RBAC it needs)."""
        return NAMESPACED_CALLS | (NODE_CALLS if self.label_node else frozenset())


_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a label key the apiserver accepts (IsQualifiedName), or None:
    an optional DNS-1123 subdomain prefix (<= 253) and '/', then a name of at most 63
    alphanumerics, '-', '_' or '.', alphanumeric at both ends."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return "the prefix before '/' must be a DNS-1123 subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            "the name must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "beginning and ending with a letter or digit"
        )
    return None


def _maybe_text(value: Any) -> str | None:
    return None if value is None or str(value) == "" else str(value)


def parse_options(
    spec: ProviderSpec, vip: VipConfig, environ: Mapping[str, str]
) -> tuple[Options, float]:
    """Validate the provider's options; returns them and the pipeline timeout to use."""
    bag = parsing.OptionBag("kubernetes", spec.options, ProviderConfigError)

    def num(key: str, default: float, lo: float, hi: float) -> float:
        return bag.take(key, parsing.number(lo, hi), default)

    def txt(key: str, default: str | None) -> str | None:
        return _maybe_text(bag.take(key, _maybe_text, default))

    duration = num("lease_duration", 10, 1, 3600)
    if duration != int(duration):
        raise ProviderConfigError(
            f"kubernetes.lease_duration: leaseDurationSeconds is whole seconds, got {duration}"
        )
    renew = num("renew_interval", min(2.0, duration / 3), 0.1, 3600)
    if renew > duration / 2:
        raise ProviderConfigError(
            f"kubernetes.renew_interval: must be at most half of lease_duration "
            f"({duration / 2:g}) so one failed renewal does not cost the lease, got {renew:g}"
        )
    request_timeout = num("request_timeout", max(0.5, min(5.0, renew)), 0.1, 60)
    if any(parsing.normalise_key(k) == "max_clock_skew" for k in spec.options):
        raise bag.fail(
            "max_clock_skew",
            "removed: another holder's lease is judged expired by local observation "
            "only (no change seen for a whole lease_duration), never by its renewTime on "
            "this node's clock; delete the option",
        )
    # pre_master must finish inside the pipeline's timeout: a GET and a write after waiting
    budget = spec.timeout - 2 * request_timeout - 1.0
    if budget < 0:
        raise ProviderConfigError(
            f"kubernetes: the provider timeout ({spec.timeout:g}s) must exceed two API "
            f"calls plus 1s ({2 * request_timeout + 1:g}s); raise `timeout` or lower "
            "request_timeout"
        )
    # a backup that never watched the Lease must see it unchanged for a whole duration
    # from its first read: the default covers that plus two polls
    wait = num("acquire_wait", min(duration + 2 * POLL_S, budget), 0, 3600)
    if wait > budget:
        raise ProviderConfigError(
            f"kubernetes.acquire_wait: must leave room for two API calls inside the "
            f"provider timeout ({spec.timeout:g}s), so at most {budget:g}s, got {wait:g}"
        )
    policy = OutagePolicy(
        bag.take(
            "apiserver_outage", parsing.choice(tuple(p.value for p in OutagePolicy)), "failsafe"
        )
    )
    pod_name = txt("pod_name", environ.get("POD_NAME"))
    node_name = txt("node_name", environ.get("NODE_NAME"))
    identity = txt("identity", pod_name or node_name or socket.gethostname())
    assert identity is not None
    namespace = txt("namespace", None)
    pod_namespace = environ.get("POD_NAMESPACE") or None
    if namespace and pod_namespace and namespace != pod_namespace:
        raise ProviderConfigError(
            f"kubernetes.namespace: {namespace!r} differs from POD_NAMESPACE "
            f"{pod_namespace!r}; the Lease, the Pod and its Events live in one namespace "
            "(the chart's Role is namespaced)"
        )
    label_pod = bag.take("label_pod", parsing.boolean, True)
    label_node = bag.take("label_node", parsing.boolean, False)
    if label_node and not node_name:
        raise ProviderConfigError(
            "kubernetes.label_node: needs the node name (NODE_NAME from the downward API "
            "or the node_name option)"
        )
    label_key = txt("label_key", LABEL_PREFIX + label_name(vip.name))
    assert label_key is not None
    problem = qualified_name_problem(label_key)
    if problem:
        raise bag.fail("label_key", f"{problem}, got {label_key!r}")
    lease_name = txt("lease_name", dns_name(vip.name, "vip-sidecar-"))
    assert lease_name is not None
    if dns_name(lease_name) != lease_name:
        raise ProviderConfigError(
            f"kubernetes.lease_name: must be a DNS-1123 name (lowercase letters, digits, "
            f"'-'), got {lease_name!r}"
        )
    options = Options(
        lease_name=lease_name,
        namespace=namespace or pod_namespace,
        kubeconfig=txt("kubeconfig", environ.get("KUBECONFIG")),
        context=txt("context", None),
        identity=identity,
        pod_name=pod_name,
        node_name=node_name,
        lease_duration=int(duration),
        renew_interval=renew,
        request_timeout=request_timeout,
        acquire_wait=wait,
        # the wait_for backstop lets a call run 1 s past request_timeout
        acquire_budget=spec.timeout - request_timeout - 1.0,
        apiserver_outage=policy,
        label_pod=label_pod and pod_name is not None,
        label_node=label_node,
        label_key=label_key,
        events=bag.take("events", parsing.boolean, True),
    )
    bag.finish()
    return options, spec.timeout
