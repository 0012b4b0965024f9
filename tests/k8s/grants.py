"""RBAC for test identities on the real apiserver, derived from the provider's call table."""

from __future__ import annotations

from typing import Any

from testbed.controlplane import ControlPlane
from vip_sidecar.providers.kubernetes.api import API_CALLS, NAMESPACED_CALLS, NODE_CALLS, ApiCall


def rules(calls: frozenset[ApiCall]) -> list[dict[str, Any]]:
    by_resource: dict[tuple[str, str], list[str]] = {}
    for c in sorted(calls, key=str):
        by_resource.setdefault((c.group, c.resource), []).append(c.verb)
    return [{"apiGroups": [g], "resources": [r], "verbs": sorted(v)}
            for (g, r), v in sorted(by_resource.items())]


def service_account(kube: ControlPlane, ns: str, name: str,
                    calls: frozenset[ApiCall] = API_CALLS) -> str:
    """A ServiceAccount allowed exactly `calls` (the node calls cluster-wide, the rest in
    `ns`); returns a bound token from TokenRequest."""
    kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": name}})
    subject = [{"kind": "ServiceAccount", "name": name, "namespace": ns}]
    rbac = "/apis/rbac.authorization.k8s.io/v1"
    namespaced = calls & NAMESPACED_CALLS
    if namespaced:
        kube.request("POST", f"{rbac}/namespaces/{ns}/roles",
                     {"metadata": {"name": name}, "rules": rules(namespaced)})
        kube.request("POST", f"{rbac}/namespaces/{ns}/rolebindings", {
            "metadata": {"name": name}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name}})
    nodes = calls & NODE_CALLS
    if nodes:
        cluster_name = f"{ns}-{name}"
        kube.request("POST", f"{rbac}/clusterroles",
                     {"metadata": {"name": cluster_name}, "rules": rules(nodes)})
        kube.request("POST", f"{rbac}/clusterrolebindings", {
            "metadata": {"name": cluster_name}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": cluster_name}})
    return kube.service_account_token(ns, name)


def user(ns: str, sa: str) -> str:
    return f"system:serviceaccount:{ns}:{sa}"
