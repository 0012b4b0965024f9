"""The chart's RBAC is exactly what the Kubernetes provider calls (issue 5, must-show 5).

The provider declares every call it makes in
vip_sidecar.providers.kubernetes.api.API_CALLS (and refuses to make one that is not
there; the fake apiserver tests check that the requests it really sends match the
table). Here the table is compared, as (group, resource, verb) sets and with exact equality, with:

* the chart's Role/ClusterRole as the real helm CLI renders them (`helm template`), with
  and without node labelling;
* the rbac.yaml template itself, parsed without Helm.

What the real authorizer then allows a token of the installed chart is in
test_helm_release.py.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from tests.integration import helmutil
from vip_sidecar.config import ProviderSpec, build_config
from vip_sidecar.providers.kubernetes import parse_options
from vip_sidecar.providers.kubernetes.api import (
    API_CALLS,
    NAMESPACED_CALLS,
    NODE_CALLS,
    rbac_triples,
)

TEMPLATE = helmutil.CHART / "templates" / "rbac.yaml"
EXAMPLE = "examples/values-kubernetes.yaml"
Triple = tuple[str, str, str]


def triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule.get("apiGroups", [])
        for resource in rule.get("resources", [])
        for verb in rule.get("verbs", [])
    }


def rbac(manifests: list[dict[str, Any]]) -> tuple[set[Triple], set[Triple]]:
    role = [t for m in helmutil.by_kind(manifests, "Role") for t in triples(m["rules"])]
    cluster = [t for m in helmutil.by_kind(manifests, "ClusterRole") for t in triples(m["rules"])]
    return set(role), set(cluster)


# ------------------------------------------------------------------ without Helm
def template_documents() -> list[dict[str, Any]]:
    """rbac.yaml with the Go-template syntax taken out: comments and control lines
    dropped, inline expressions replaced by a placeholder. Good enough for the rules."""
    text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", TEMPLATE.read_text(), flags=re.S)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{{") and stripped.endswith("}}"):
            continue  # if/end/include-with-nindent lines
        lines.append(re.sub(r"\{\{.*?\}\}", "placeholder", line))
    return [d for d in yaml.safe_load_all("\n".join(lines)) if d]


def test_the_table_is_what_the_provider_is_configured_to_need():
    assert NAMESPACED_CALLS | NODE_CALLS == API_CALLS
    assert all(not c.cluster_scoped for c in NAMESPACED_CALLS)
    assert all(c.cluster_scoped for c in NODE_CALLS)
    env = {"POD_NAME": "p", "NODE_NAME": "n", "POD_NAMESPACE": "ns"}
    vip = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 1, "pass": "x",
                        "addr": "10.0.0.2"}).vips[0]
    plain, _ = parse_options(ProviderSpec("kubernetes", {}), vip, env)
    nodes, _ = parse_options(ProviderSpec("kubernetes", {"label_node": True}), vip, env)
    assert plain.calls == NAMESPACED_CALLS and nodes.calls == API_CALLS


def test_rbac_template_grants_exactly_the_provider_calls():
    docs = template_documents()
    role, cluster = rbac(docs)
    assert role == rbac_triples(NAMESPACED_CALLS)
    assert cluster == rbac_triples(NODE_CALLS)
    assert role | cluster == rbac_triples(API_CALLS)
    # the ClusterRole only exists with node labelling
    text = TEMPLATE.read_text()
    guard = text.index("{{- if .Values.kubernetes.labelNode }}")
    assert text.index("kind: ClusterRole") > guard
    assert text.index("kind: Role\n") < guard


def test_template_parsing_really_sees_the_rules():
    """Guard against a parser that silently finds nothing: one rule less must differ."""
    docs = template_documents()
    role_doc = next(d for d in docs if d.get("kind") == "Role")
    role_doc["rules"][0]["verbs"] = []
    role, _ = rbac(docs)
    assert role != rbac_triples(NAMESPACED_CALLS)


# ------------------------------------------------------------------ real Helm
@pytest.mark.helm
def test_rendered_rbac_with_node_labels_equals_every_provider_call():
    manifests = helmutil.render_chart([EXAMPLE])
    role, cluster = rbac(manifests)
    assert role == rbac_triples(NAMESPACED_CALLS)
    assert cluster == rbac_triples(NODE_CALLS)
    assert role | cluster == rbac_triples(API_CALLS)
    # bound to the service account the DaemonSet runs as, in the release namespace
    pod = helmutil.one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        (binding,) = helmutil.by_kind(manifests, kind)
        (subject,) = binding["subjects"]
        assert subject["name"] == pod["serviceAccountName"]
        assert subject["namespace"] == helmutil.NAMESPACE
    (role_doc,) = helmutil.by_kind(manifests, "Role")
    assert role_doc["metadata"]["namespace"] == helmutil.NAMESPACE


@pytest.mark.helm
def test_rendered_rbac_without_node_labels_has_no_cluster_role():
    manifests = helmutil.render_chart(set_values={"vips": [
        {"vhid": 7, "addr": "192.0.2.1", "providers": [{"name": "kubernetes"}]}]})
    role, cluster = rbac(manifests)
    assert role == rbac_triples(NAMESPACED_CALLS)
    assert cluster == set()
    assert not helmutil.by_kind(manifests, "ClusterRoleBinding")


@pytest.mark.helm
def test_the_example_config_is_accepted_and_covered_by_the_rendered_rbac():
    manifests = helmutil.render_chart([EXAMPLE])
    config = yaml.safe_load(helmutil.one(manifests, "ConfigMap")["data"]["config.yaml"])
    role, cluster = rbac(manifests)
    specs = [(vip, p) for vip in config["vips"] for p in vip.get("providers") or []
             if isinstance(p, dict) and p.get("name") == "kubernetes"]
    assert specs, "the kubernetes example configures no kubernetes provider"
    env = {"POD_NAME": "vip-vip-sidecar-abcde", "NODE_NAME": "node-1",
           "POD_NAMESPACE": helmutil.NAMESPACE}
    for vip_doc, provider in specs:
        vip = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": vip_doc["vhid"],
                            "pass": "x", "addr": vip_doc["addr"],
                            "name": vip_doc.get("name", f"vhid{vip_doc['vhid']}")}).vips[0]
        options = {k: v for k, v in provider.items() if k not in ("name", "timeout", "id")}
        opts, _ = parse_options(ProviderSpec("kubernetes", options), vip, env)
        assert rbac_triples(opts.calls) <= role | cluster
        assert opts.namespace == helmutil.NAMESPACE


# ------------------------------------------------------------------ issue 18: narrower grants
def lease_names(manifests: list[dict[str, Any]]) -> tuple[set[str], set[Triple]]:
    """(resourceNames of the Role's lease get/update rule, lease triples granted by name)."""
    (role_doc,) = helmutil.by_kind(manifests, "Role")
    named = [r for r in role_doc["rules"] if r.get("resourceNames")]
    names = {n for r in named for n in r["resourceNames"]}
    return names, triples(named)


@pytest.mark.helm
def test_lease_get_and_update_are_restricted_to_the_names_the_provider_uses():
    vips = [
        {"vhid": 7, "addr": "192.0.2.1", "name": "Web.VIP_1", "providers": ["kubernetes"]},
        {"vhid": 8, "addr": "192.0.2.2", "providers": [{"name": "kubernetes", "lease_name": "x"}]},
        {"vhid": 9, "addr": "192.0.2.3", "providers": ["alias"]},
        {"vhid": 10, "addr": "192.0.2.4"},  # config.providers below: kubernetes
    ]
    manifests = helmutil.render_chart(
        set_values={"vips": vips, "config": {"providers": [{"name": "kubernetes"}]}})
    names, named = lease_names(manifests)
    env = {"POD_NAME": "p", "NODE_NAME": "n", "POD_NAMESPACE": helmutil.NAMESPACE}
    expected = set()
    for vip_doc in vips:
        if vip_doc.get("providers") == ["alias"]:
            continue
        vip = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": vip_doc["vhid"],
                            "pass": "x", "addr": vip_doc["addr"],
                            "name": vip_doc.get("name", f"vhid{vip_doc['vhid']}")}).vips[0]
        provider = (vip_doc.get("providers") or [{}])[0]
        options = {k: v for k, v in provider.items() if k == "lease_name"} if isinstance(
            provider, dict) else {}
        expected.add(parse_options(ProviderSpec("kubernetes", options), vip, env)[0].lease_name)
    assert names == expected == {"vip-sidecar-web-vip-1", "x", "vip-sidecar-vhid10"}
    assert named == {("coordination.k8s.io", "leases", "get"),
                     ("coordination.k8s.io", "leases", "update")}
    # create cannot be restricted by name in RBAC: it is granted without resourceNames
    (role_doc,) = helmutil.by_kind(manifests, "Role")
    create = [r for r in role_doc["rules"] if "create" in r["verbs"] and "leases" in r["resources"]]
    assert create and all("resourceNames" not in r for r in create)


@pytest.mark.helm
def test_the_admission_policy_binds_the_sidecars_service_account():
    manifests = helmutil.render_chart([EXAMPLE])
    policy = helmutil.one(manifests, "ValidatingAdmissionPolicy")
    binding = helmutil.one(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    sa = helmutil.one(manifests, "ServiceAccount")["metadata"]["name"]
    (cond,) = policy["spec"]["matchConditions"]
    assert cond["expression"] == (
        f"request.userInfo.username == 'system:serviceaccount:{helmutil.NAMESPACE}:{sa}'")
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert set(rule["resources"]) == {"pods", "nodes"} and rule["operations"] == ["UPDATE"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    assert policy["spec"]["variables"] == [{"name": "prefix", "expression": "'vip-sidecar.io/'"}]
    off = helmutil.render_chart([EXAMPLE], set_values={"kubernetes": {"admissionPolicy": False}},
                                with_notes=True)
    assert not helmutil.by_kind(off[0], "ValidatingAdmissionPolicy")
    assert "admissionPolicy=false" in off[1]


@pytest.mark.helm
def test_kube_system_is_refused_unless_allowed_and_then_warned_about():
    with pytest.raises(helmutil.HelmError, match="refusing to install into kube-system"):
        helmutil.render_chart([EXAMPLE], namespace="kube-system")
    _, notes = helmutil.render_chart([EXAMPLE], namespace="kube-system", with_notes=True,
                                     set_values={"kubernetes": {"allowKubeSystem": True}})
    assert "WARNING: installed into kube-system" in notes
    _, notes = helmutil.render_chart([EXAMPLE], with_notes=True)
    assert "kube-system" not in notes and "WARNING: kubernetes.admissionPolicy" not in notes
