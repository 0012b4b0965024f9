"""`helm install / upgrade / uninstall` of the chart against the REAL kube-apiserver, and
the chart's RBAC judged by the real authorizer.

No kubelet or scheduler runs: the DaemonSet is created and its pods never exist (the
tests never `--wait`). Everything else is what a cluster does: schema and `kubeVersion`
checks, `lookup` of the existing Secret on upgrade, RBAC objects, release records.
"""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest

from tests.integration import helmutil
from tests.integration.helmutil import HelmError
from vip_sidecar.providers.kubernetes.api import (
    API_CALLS,
    NAMESPACED_CALLS,
    NODE_CALLS,
    rbac_triples,
)

pytestmark = [pytest.mark.k8s_real, pytest.mark.helm]

EXAMPLES = list(helmutil.EXAMPLES.values())
RELEASE = "vip-sidecar"


def objects(kube, ns: str, manifest: str) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """(rendered object, the live object or None) for every object of a release."""
    import yaml

    docs = [d for d in yaml.safe_load_all(manifest) if d]
    return [(d, kube.get(kube.resource_path(d, ns))) for d in docs]


def test_install_upgrade_uninstall_with_the_real_helm(kube, kube_ns, tmp_path):
    ns = kube_ns
    kubeconfig = kube.kubeconfig(tmp_path / "admin")
    release = helmutil.install(kubeconfig, ns, release=RELEASE)
    assert release["info"]["status"] == "deployed" and release["version"] == 1
    assert "vip-sidecar status" in release["info"]["notes"]
    live = objects(kube, ns, release["manifest"])
    kinds = sorted(d["kind"] for d, _ in live)
    assert kinds == ["ConfigMap", "DaemonSet", "Role", "RoleBinding", "Secret",
                     "ServiceAccount", "ValidatingAdmissionPolicy",
                     "ValidatingAdmissionPolicyBinding"], kinds
    assert all(obj is not None for _, obj in live), [d["kind"] for d, o in live if o is None]
    ds = kube.get(f"/apis/apps/v1/namespaces/{ns}/daemonsets/{RELEASE}")
    assert ds["status"].get("currentNumberScheduled", 0) == 0  # no controller: no pods
    secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/{RELEASE}")
    password = base64.b64decode(secret["data"]["password"])
    assert 1 <= len(password) <= 19

    # upgrade with a changed value: the generated password is looked up and kept
    upgraded = helmutil.install(kubeconfig, ns, set_values={"config": {"advbase": 2}},
                                release=RELEASE, upgrade=True)
    assert upgraded["version"] == 2
    secret = kube.get(f"/api/v1/namespaces/{ns}/secrets/{RELEASE}")
    assert base64.b64decode(secret["data"]["password"]) == password
    cm = kube.get(f"/api/v1/namespaces/{ns}/configmaps/{RELEASE}")
    assert "advbase: 2" in cm["data"]["config.yaml"]

    # the schema still refuses bad values, with helm's own message, and nothing changes
    with pytest.raises(HelmError, match=r"at '/vips/0/vhid': maximum: got 300, want 255"):
        helmutil.install(kubeconfig, ns, set_values={"vips": [{"vhid": 300,
                                                              "addr": "192.0.2.1"}]},
                         release=RELEASE, upgrade=True)

    helmutil.helm("uninstall", RELEASE, "--namespace", ns, kubeconfig=kubeconfig)
    gone = objects(kube, ns, upgraded["manifest"])
    assert all(obj is None for _, obj in gone), [d["kind"] for d, o in gone if o is not None]
    left = kube.get(f"/api/v1/namespaces/{ns}/secrets?labelSelector=owner%3Dhelm") or {}
    assert left.get("items") == []  # helm's release records are gone too


@pytest.mark.parametrize("values_file", EXAMPLES, ids=lambda p: p.split("-")[-1][:-5])
def test_every_example_installs(kube, values_file, tmp_path):
    ns = kube.namespace("ex")
    kubeconfig = kube.kubeconfig(tmp_path / "admin")
    release = helmutil.install(kubeconfig, ns, [values_file], release=RELEASE)
    assert release["info"]["status"] == "deployed"
    missing = [d["kind"] for d, o in objects(kube, ns, release["manifest"]) if o is None]
    assert not missing


# ------------------------------------------------------------------ RBAC, real authorizer
def rules_review(kube, ns: str, token: str) -> set[tuple[str, str, str]]:
    _, doc = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews",
                          {"apiVersion": "authorization.k8s.io/v1",
                           "kind": "SelfSubjectRulesReview", "spec": {"namespace": ns}},
                          token=token)
    out = set()
    for rule in doc["status"]["resourceRules"]:
        for group in rule.get("apiGroups", []):
            for resource in rule.get("resources", []):
                for verb in rule.get("verbs", []):
                    out.add((group, resource, verb))
    return out


def access(kube, token: str, verb: str, group: str, resource: str, ns: str = "",
           name: str = "") -> bool:
    """SelfSubjectAccessReview: what the real authorizer says to this token."""
    attrs = {"verb": verb, "group": group, "resource": resource}
    if ns:
        attrs["namespace"] = ns
    if name:
        attrs["name"] = name
    _, doc = kube.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
                          {"apiVersion": "authorization.k8s.io/v1",
                           "kind": "SelfSubjectAccessReview",
                           "spec": {"resourceAttributes": attrs}}, token=token)
    return bool(doc["status"]["allowed"])


def baseline(kube, ns: str) -> set[tuple[str, str, str]]:
    """What every authenticated identity may do (self reviews, public trust bundles...):
    the rules review of a ServiceAccount bound to nothing, asked of the same server."""
    kube.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                 {"metadata": {"name": "nobody"}})
    return rules_review(kube, ns, kube.service_account_token(ns, "nobody"))


@pytest.mark.parametrize("label_node", [False, True], ids=["pod-labels", "node-labels"])
def test_the_chart_token_can_do_the_call_table_and_nothing_else(kube, tmp_path, label_node):
    ns = kube.namespace("rbac")
    node = f"{ns}-node"
    other = f"{ns}-other"
    kube.add_node(node)
    kube.add_node(other)
    kube.add_pod(ns, "pod-a", node)
    kubeconfig = kube.kubeconfig(tmp_path / "admin")
    vips = [{"name": "web", "vhid": 7, "addr": "192.0.2.1",
             "providers": [{"name": "kubernetes", "label_node": label_node}]}]
    helmutil.install(kubeconfig, ns, set_values={"kubernetes": {"labelNode": label_node},
                                                 "vips": vips}, release=RELEASE)
    token = kube.service_account_token(ns, RELEASE)
    lease = "vip-sidecar-web"  # the only Lease the Role names for get/update
    wanted = rbac_triples(API_CALLS if label_node else NAMESPACED_CALLS)

    # the review for the token equals the chart's Role (plus what everyone may do)
    everyone = baseline(kube, ns)
    assert not everyone & rbac_triples(API_CALLS)  # the table is not granted to all
    granted = rules_review(kube, ns, token) - everyone
    assert granted == rbac_triples(NAMESPACED_CALLS) | (
        rbac_triples(NODE_CALLS) if label_node else set()), granted

    # every call of the table is allowed ...
    for group, resource, verb in sorted(wanted):
        scoped = ns if (group, resource, verb) not in rbac_triples(NODE_CALLS) else ""
        name = lease if (resource, verb) in (("leases", "get"), ("leases", "update")) else ""
        assert access(kube, token, verb, group, resource, scoped, name), (group, resource, verb)
    # ... the Lease by its name only
    assert not access(kube, token, "get", "coordination.k8s.io", "leases", ns, "other")
    assert not access(kube, token, "update", "coordination.k8s.io", "leases", ns, "other")
    # ... and the real server says 403 to calls outside it
    body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "vip-sidecar-x", "namespace": ns},
            "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 10}}
    code, _ = kube.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                           body, token=token, ok=())
    assert code == 201  # create cannot be limited by name (the name is in the body)
    denied = [
        ("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/vip-sidecar-x", None),
        ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/vip-sidecar-x", None),
        ("GET", f"/api/v1/namespaces/{ns}/secrets", None),
        ("GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", None),  # list
        ("DELETE", f"/api/v1/namespaces/{ns}/pods/pod-a", None),
        ("GET", "/api/v1/namespaces/default/pods/pod-a", None),  # other namespace
        ("POST", f"/api/v1/namespaces/{ns}/pods", {"metadata": {"name": "x"}}),
    ]
    if not label_node:
        denied.append(("PATCH", f"/api/v1/nodes/{other}", {"metadata": {"labels": {"a": "b"}}}))
        denied.append(("GET", f"/api/v1/nodes/{node}", None))
    for method, path, body in denied:
        code, doc = kube.request(method, path, body, token=token, ok=(),
                                 content_type="application/merge-patch+json")
        assert code == 403, (method, path, code, doc.get("message"))
    if label_node:
        code, _ = kube.request("PATCH", f"/api/v1/nodes/{node}",
                               {"metadata": {"labels": {"vip-sidecar.io/x": "master"}}},
                               token=token, ok=(), content_type="application/merge-patch+json")
        assert code == 200


def test_uninstall_leaves_no_cluster_scoped_objects(kube, tmp_path):
    ns = kube.namespace("crb")
    kubeconfig = kube.kubeconfig(tmp_path / "admin")
    release = helmutil.install(kubeconfig, ns, ["examples/values-kubernetes.yaml"],
                               release=RELEASE)
    live = objects(kube, ns, release["manifest"])
    assert {"ClusterRole", "ClusterRoleBinding"} <= {d["kind"] for d, _ in live}
    helmutil.helm("uninstall", RELEASE, "--namespace", ns, kubeconfig=kubeconfig)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if all(o is None for _, o in objects(kube, ns, release["manifest"])):
            break
        time.sleep(0.2)
    assert all(o is None for _, o in objects(kube, ns, release["manifest"]))
