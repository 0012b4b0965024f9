"""The Helm chart with the real helm CLI and the real kube-apiserver (tests/k8s).

Renders are `helm template` (schema validation, templates) for the Kubernetes version we
build; lint is `helm lint --strict`; the rendered manifests are then judged by the real
apiserver with a server-side dry-run apply and strict field validation, and the rendered
config file is fed to the daemon's own config loader the way the pod would see it (env
from the downward API, passwords from the mounted Secret). Install, upgrade and uninstall
against the real apiserver are in test_helm_release.py.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration import helmutil
from tests.integration.helmutil import HelmError, by_kind, one, render_chart
from tests.k8s.podrunner import container_env
from vip_sidecar import cli, sources
from vip_sidecar import config as cfgmod
from vip_sidecar.providers import registry

pytestmark = pytest.mark.helm

CHART = helmutil.CHART
EXAMPLES = helmutil.EXAMPLES
CASES = [pytest.param(None, id="defaults")] + [
    pytest.param(path, id=name) for name, path in EXAMPLES.items()
]
HOST_IP = "198.51.100.7"  # what status.hostIP would be on the node
HOST_IP6 = "2001:db8:51::7"  # its IPv6 address (status.hostIPs on a dual-stack node)

# the default values configure no kubernetes provider: no Lease name to grant get/update
# on (tests/integration/test_kubernetes_rbac.py checks resourceNames with one)
ROLE_RULES = [
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "patch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
]  # fmt: skip
CLUSTER_ROLE_RULES = [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "patch"]}]


def _files(values_file: str | None) -> list[str]:
    return [values_file] if values_file else []


def _values(values_file: str | None) -> dict[str, Any]:
    """Chart defaults with the example layered on top, as Helm sees them."""
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    return helmutil.deep_merge(defaults, helmutil.merged_values(_files(values_file)))


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return dict(pod["containers"][0])


# ------------------------------------------------------------------ lint and render
@pytest.mark.parametrize("values_file", CASES)
def test_lint(values_file: str | None) -> None:
    result = helmutil.lint_chart(_files(values_file))
    # --strict: a warning fails as well as an error
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


def test_lint_reports_bad_values() -> None:
    """The lint path really checks: values the schema refuses make it report an error."""
    result = helmutil.lint_chart(set_values={"vips": [{"vhid": 300, "addr": "192.0.2.1"}]})
    assert result.returncode != 0
    assert "[ERROR]" in result.stdout and "maximum: got 300, want 255" in result.stdout


def server_dry_run(kube: Any, manifests: list[dict[str, Any]], ns: str) -> list[str]:
    errors = []
    for doc in manifests:
        code, answer = kube.apply(doc, namespace=ns)
        if code not in (200, 201):
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {code} "
                          f"{answer.get('message', answer)}")
    return errors


@pytest.mark.k8s_real
@pytest.mark.parametrize("values_file", CASES)
def test_render_is_accepted_by_the_real_apiserver(values_file: str | None, kube,
                                                  kube_ns) -> None:
    manifests = render_chart(_files(values_file), namespace=kube_ns)
    kinds = sorted(m["kind"] for m in manifests)
    for kind in ("ConfigMap", "DaemonSet", "Role", "RoleBinding", "ServiceAccount"):
        assert kind in kinds
    errors = server_dry_run(kube, manifests, kube_ns)
    assert not errors, "\n".join(errors)


@pytest.mark.k8s_real
def test_server_side_validation_catches_bad_manifests(kube, kube_ns) -> None:
    """The validation step can fail: a misspelt field under strict validation is an error."""
    manifests = render_chart(namespace=kube_ns)
    ds = one(manifests, "DaemonSet")
    ds["spec"]["template"]["spec"]["hostNetwrok"] = True
    errors = server_dry_run(kube, [ds], kube_ns)
    assert errors and "hostNetwrok" in errors[0], errors


@pytest.mark.parametrize("values_file", CASES)
def test_examples_use_their_provider(values_file: str | None) -> None:
    values = _values(values_file)
    names = {
        p if isinstance(p, str) else p["name"]
        for vip in values["vips"]
        for p in vip.get("providers") or []
    }
    example = next((name for name, path in EXAMPLES.items() if path == values_file), None)
    if values_file is None:
        assert names == set()
    elif example in registry.BUILTINS:
        assert example in names
    else:
        # the dual-stack example: one VIP per family
        assert example == "dualstack", f"{values_file}: name an example after its provider"
        assert sorted(":" in str(v["addr"]) for v in values["vips"]) == [False, True]


# ------------------------------------------------------------------ schema and checks
SCHEMA = "values don't meet the specifications of the schema"
REJECTED = [
    ("vhid-300", {"vips": [{"vhid": 300, "addr": "192.0.2.1"}]},
     r"at '/vips/0/vhid': maximum: got 300, want 255"),
    ("vhid-0", {"vips": [{"vhid": 0, "addr": "192.0.2.1"}]},
     r"at '/vips/0/vhid': minimum: got 0, want 1"),
    ("advskew--1", {"vips": [{"vhid": 3, "addr": "192.0.2.1", "advskew": -1}]},
     r"at '/vips/0/advskew': minimum: got -1, want 0"),
    ("advskew-255", {"vips": [{"vhid": 3, "addr": "192.0.2.1", "advskew": 255}]},
     r"at '/vips/0/advskew': maximum: got 255, want 254"),
    ("name-newline", {"vips": [{"vhid": 3, "addr": "192.0.2.1", "name": "a\nb"}]},
     r"at '/vips/0/name': 'a\\nb' does not match pattern"),
    ("advbase-256", {"config": {"advbase": 256}},
     r"at '/config/advbase': maximum: got 256, want 255"),
    ("addr-octet", {"vips": [{"vhid": 3, "addr": "192.0.2.300"}]},
     r"at '/vips/0/addr': '192.0.2.300' is not valid ipv4"),
    ("addr-word", {"vips": [{"vhid": 3, "addr": "vip.example.com"}]},
     r"at '/vips/0/addr': 'vip.example.com' is not valid ipv4"),
    ("addr-ipv6", {"vips": [{"vhid": 3, "addr": "fd00::1::2"}]},
     r"at '/vips/0/addr': 'fd00::1::2' is not valid ipv6"),
    ("addr-ipv6-zone", {"vips": [{"vhid": 3, "addr": "fe80::1%eth0"}]},
     r"at '/vips/0/addr'"),
    ("mcast-ipv6-unicast", {"config": {"mcast": "fd00::12"}},
     r"at '/config/mcast'"),
    ("provider-name", {"vips": [{"vhid": 3, "addr": "192.0.2.1", "providers": ["bogus"]}]},
     r"at '/vips/0/providers/0': value must be one of 'alias', 'aws', 'kubernetes', 'script'"),
    ("provider-mapping",
     {"vips": [{"vhid": 3, "addr": "192.0.2.1", "providers": [{"name": "bogus"}]}]},
     r"at '/vips/0/providers/0/name': value must be one of 'alias', 'aws', 'kubernetes'"),
    ("vips-missing", {"vips": None}, r"missing property 'vips'"),
    ("vips-empty", {"vips": []}, r"at '/vips': minItems: got 0, want 1"),
    ("vip-without-addr", {"vips": [{"vhid": 3}]}, r"at '/vips/0': missing property 'addr'"),
    ("password-in-vip", {"vips": [{"vhid": 3, "addr": "192.0.2.1", "pass": "secret"}]},
     r"at '/vips/0': additional properties 'pass' not allowed"),
    ("password-in-config", {"config": {"pass": "secret"}},
     r"at '/config': additional properties 'pass' not allowed"),
    ("password-too-long", {"password": "x" * 20}, r"at '/password': maxLength: got 20, want 19"),
    ("daemonize", {"config": {"daemonize": True}}, r"at '/config/daemonize': value must be false"),
    ("unknown-top-level", {"vipz": []}, r"additional properties 'vipz' not allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "message"), [pytest.param(o, m, id=i) for i, o, m in REJECTED]
)
def test_schema_rejects_bad_values(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError) as err:
        render_chart(set_values=overrides)
    assert SCHEMA in str(err.value)
    assert re.search(message, str(err.value)), str(err.value)


FAILED = [
    ("grace-period", {"terminationGracePeriodSeconds": 10},
     r"terminationGracePeriodSeconds \(10\) must be greater than config.shutdown_timeout \(10\)"),
    ("duplicate-vhid",
     {"vips": [{"vhid": 7, "addr": "192.0.2.1"}, {"vhid": 7, "addr": "192.0.2.2", "name": "b"}]},
     r"vips\[1\]: vhid 7 on eth0 is already used by vips\[0\]"),
    ("label-node-without-rbac",
     {"vips": [{"vhid": 7, "addr": "192.0.2.1",
                "providers": [{"name": "kubernetes", "label_node": True}]}]},
     r"set kubernetes.labelNode=true"),
    ("unknown-password-key", {"vips": [{"vhid": 7, "addr": "192.0.2.1", "passwordKey": "nope"}]},
     r'vips\[0\].passwordKey "nope" is not a key of the chart\'s Secret'),
    ("label-key-outside-prefix",
     {"vips": [{"vhid": 7, "addr": "192.0.2.1",
                "providers": [{"name": "kubernetes", "label_key": "example.com/vip"}]}]},
     r'label_key "example.com/vip" is not under kubernetes.labelPrefix "vip-sidecar.io/"'),
    ("default-label-key-outside-prefix",
     {"kubernetes": {"labelPrefix": "example.com/"},
      "vips": [{"vhid": 7, "addr": "192.0.2.1", "providers": ["kubernetes"]}]},
     r"default label key is under vip-sidecar.io/, not kubernetes.labelPrefix"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "message"), [pytest.param(o, m, id=i) for i, o, m in FAILED])
def test_template_checks_fail_clearly(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(HelmError, match=message):
        render_chart(set_values=overrides)


def test_schema_covers_every_config_field() -> None:
    """values for every config field: the schema follows vip_sidecar.config's field lists."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    config_props = set(schema["properties"]["config"]["properties"])
    vip_props = set(schema["properties"]["vips"]["items"]["properties"])
    managed = {"pass", "passfile", "http", "status_socket"}  # set by the chart itself
    daemon = set(cfgmod.VIP_FIELDS) | set(cfgmod.GLOBAL_FIELDS)
    per_vip_only = {"addr", "name"}  # one value for every VIP makes no sense
    assert config_props == daemon - managed - per_vip_only
    assert vip_props - {"passwordKey"} == set(cfgmod.VIP_FIELDS) - managed - {"srcip"}
    assert set(registry.BUILTINS) == set(schema["definitions"]["provider"]["then"]["enum"])


# ------------------------------------------------------------------ security facts
@pytest.mark.parametrize("values_file", CASES)
def test_security_context(values_file: str | None) -> None:
    values = _values(values_file)
    manifests = render_chart(_files(values_file))
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert pod["enableServiceLinks"] is False  # service links would be VIP_SIDECAR_* vars
    assert "initContainers" not in pod
    c = _container(manifests)
    sc = c["securityContext"]
    assert sc["privileged"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert sorted(sc["capabilities"]["add"]) == ["NET_ADMIN", "NET_RAW"]
    if values["security"]["nonRoot"]:
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] == values["security"]["uid"]
        assert sc["allowPrivilegeEscalation"] is True  # file capabilities need it
        assert c["command"][0] == "/opt/vip-sidecar/bin/python3-netcaps"
        assert pod["securityContext"]["fsGroup"] == values["security"]["gid"]
    else:
        assert sc["runAsUser"] == 0 and sc["allowPrivilegeEscalation"] is False
        assert "command" not in c  # the image's ENTRYPOINT
    assert c["args"] == ["run"]
    # probes point at the HTTP port the daemon serves
    (port,) = c["ports"]
    assert port["containerPort"] == values["http"]["port"]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["VIP_SIDECAR_HTTP"]["value"].endswith(f":{port['containerPort']}")
    # resources, scheduling, lifecycle
    assert c["resources"]["requests"] and c["resources"]["limits"]
    shutdown = values["config"].get("shutdown_timeout", 10)
    assert pod["terminationGracePeriodSeconds"] > shutdown
    assert one(manifests, "DaemonSet")["spec"]["updateStrategy"]["type"] == "RollingUpdate"


@pytest.mark.k8s_real
def test_scheduling_values_reach_the_pod(kube, kube_ns) -> None:
    manifests = render_chart(namespace=kube_ns,

        set_values={
            "nodeSelector": {"vip": "yes"},
            "tolerations": [{"key": "edge", "operator": "Exists"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
            "priorityClassName": "system-node-critical",
        }
    )  # fmt: skip
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["nodeSelector"]["vip"] == "yes"  # merged with the default os selector
    assert pod["tolerations"] == [{"key": "edge", "operator": "Exists"}]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert not server_dry_run(kube, manifests, kube_ns)


def test_password_never_in_configmap() -> None:
    secret_values = {"password": "Xq7-main-pass", "extraPasswords": {"db": "Zz9-db-pass"}}
    vips = [
        {"vhid": 1, "addr": "192.0.2.10"},
        {"vhid": 2, "addr": "192.0.2.11", "name": "db", "passwordKey": "db"},
    ]
    manifests = render_chart(set_values={**secret_values, "vips": vips})
    for cm in by_kind(manifests, "ConfigMap"):
        text = json.dumps(cm)
        assert "Xq7-main-pass" not in text and "Zz9-db-pass" not in text
        for word in ("Xq7-main-pass", "Zz9-db-pass"):
            assert base64.b64encode(word.encode()).decode() not in text
    secret = one(manifests, "Secret")
    assert base64.b64decode(secret["data"]["password"]) == b"Xq7-main-pass"
    assert base64.b64decode(secret["data"]["db"]) == b"Zz9-db-pass"
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert config["passfile"] == "/etc/vip-sidecar/secret/password"
    assert config["vips"][1]["passfile"] == "/etc/vip-sidecar/secret/db"
    assert "passwordKey" not in config["vips"][1]
    env_names = {e["name"] for e in _container(manifests)["env"]}
    assert "VIP_SIDECAR_PASS" not in env_names


def test_existing_secret_is_mounted_not_created() -> None:
    manifests = render_chart(set_values={"existingSecret": "carp", "existingSecretKey": "pw"})
    assert by_kind(manifests, "Secret") == []
    volumes = one(manifests, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    (secret_volume,) = [v for v in volumes if "secret" in v]
    assert secret_volume["secret"]["secretName"] == "carp"
    assert secret_volume["secret"]["defaultMode"] == 0o400
    nonroot = render_chart(set_values={"security": {"nonRoot": True}})
    volumes = one(nonroot, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    (secret_volume,) = [v for v in volumes if "secret" in v]
    assert secret_volume["secret"]["defaultMode"] == 0o440  # group fsGroup, never others
    config = yaml.safe_load(one(manifests, "ConfigMap")["data"]["config.yaml"])
    assert config["passfile"] == "/etc/vip-sidecar/secret/pw"


def test_generated_password_when_none_given() -> None:
    secret = one(render_chart(), "Secret")
    generated = base64.b64decode(secret["data"]["password"])
    assert 1 <= len(generated) <= 19


# ------------------------------------------------------------------ RBAC
def _rules(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {k: rule[k] for k in ("apiGroups", "resources", "verbs") if k in rule}
        for rule in obj["rules"]
    ]


def test_rbac_is_exactly_what_the_kubernetes_provider_uses() -> None:
    manifests = render_chart()
    role = one(manifests, "Role")
    assert _rules(role) == ROLE_RULES
    assert by_kind(manifests, "ClusterRole") == []
    binding = one(manifests, "RoleBinding")
    sa = one(manifests, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": helmutil.NAMESPACE}
    ]
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]

    labelled = render_chart(set_values={"kubernetes": {"labelNode": True}})
    assert _rules(one(labelled, "Role")) == ROLE_RULES
    cluster_role = one(labelled, "ClusterRole")
    assert _rules(cluster_role) == CLUSTER_ROLE_RULES
    crb = one(labelled, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert crb["subjects"][0]["name"] == sa["metadata"]["name"]


def test_rbac_and_service_account_can_be_left_out() -> None:
    manifests = render_chart(
        set_values={
            "rbac": {"create": False},
            "serviceAccount": {"create": False, "name": "preexisting"},
            "kubernetes": {"labelNode": True},
        }
    )
    for kind in ("Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount",
                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert by_kind(manifests, kind) == []
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "preexisting"


# ------------------------------------------------------------------ the daemon accepts it
def _pod_env(container: dict[str, Any], namespace: str) -> dict[str, str]:
    """The container's environment as the kubelet would build it on node HOST_IP."""
    fields = {
        "status.hostIP": HOST_IP,
        "status.hostIPs": f"{HOST_IP},{HOST_IP6}",
        "spec.nodeName": "node-a",
        "metadata.name": "vip-abcde",
        "metadata.namespace": namespace,
    }
    return container_env(container, fields)


@pytest.mark.parametrize("values_file", CASES)
def test_config_is_accepted_by_the_daemon(values_file: str | None, tmp_path: Path) -> None:
    values = _values(values_file)
    manifests = render_chart(_files(values_file))
    container = _container(manifests)
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    env = _pod_env(container, helmutil.NAMESPACE)

    # the Secret as the volume would show it: chart-made, or stand-in for existingSecret
    secrets = by_kind(manifests, "Secret")
    if secrets:
        data = {k: base64.b64decode(v) for k, v in secrets[0]["data"].items()}
    else:
        keys = {values["existingSecretKey"]} | {
            v["passwordKey"] for v in values["vips"] if v.get("passwordKey")
        }
        data = {k: f"pw-{k}".encode()[:19] for k in keys}
    (secret_volume,) = [v for v in pod["volumes"] if "secret" in v]
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    for key, value in data.items():
        (secret_dir / key).write_bytes(value)
        (secret_dir / key).chmod(secret_volume["secret"]["defaultMode"])  # as kubelet would
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    mount_path = mounts[secret_volume["name"]]

    (config_volume,) = [v for v in pod["volumes"] if v["name"] == "config"]
    assert env["VIP_SIDECAR_CONFIG"] == f"{mounts['config']}/config.yaml"
    configmaps = {cm["metadata"]["name"]: cm for cm in by_kind(manifests, "ConfigMap")}
    text = configmaps[config_volume["configMap"]["name"]]["data"]["config.yaml"]
    config_file = tmp_path / "config.yaml"
    config_file.write_text(text.replace(mount_path, str(secret_dir)))
    env["VIP_SIDECAR_CONFIG"] = str(config_file)

    # what `vip-sidecar run` (the container's args) does with that environment
    ns = cli.build_parser().parse_args(container["args"])
    config = sources.assemble(cli.config_request(ns), env)

    assert config.http == f"{HOST_IP}:{values['http']['port']}"
    assert config.status_socket == "/run/vip-sidecar/ctl/status.sock"
    assert config.daemonize is False and config.facility == "none"
    assert len(config.vips) == len(values["vips"])
    for vip, wanted in zip(config.vips, values["vips"], strict=True):
        # each VIP gets the node address of its own family
        assert str(vip.srcip) == (HOST_IP if vip.addr.version == 4 else HOST_IP6)
        assert vip.vhid == wanted["vhid"] and str(vip.addr) == wanted["addr"]
        key = wanted.get("passwordKey", values["existingSecretKey"])
        assert vip.password == data[key]
        names = [p if isinstance(p, str) else p["name"] for p in wanted.get("providers") or []]
        assert [p.name for p in vip.providers] == names
    assert not [w for w in config.warnings if "readable by others" in w]


def test_srcip_comes_from_status_host_ips_only_with_an_ipv6_vip() -> None:
    """status.hostIPs (both families) is what an IPv6 VIP needs; an IPv4-only chart keeps
    status.hostIP, which clusters older than PodHostIPs (1.29) also accept."""
    def srcip_field(files: list[str]) -> str:
        env = {e["name"]: e for e in _container(render_chart(files))["env"]}
        return str(env["VIP_SIDECAR_SRCIP"]["valueFrom"]["fieldRef"]["fieldPath"])

    assert srcip_field([]) == "status.hostIP"
    assert srcip_field([EXAMPLES["alias"]]) == "status.hostIP"
    assert srcip_field([EXAMPLES["dualstack"]]) == "status.hostIPs"


def test_notes() -> None:
    _, notes = render_chart(with_notes=True)
    assert "kubectl -n vip-system exec ds/vip-vip-sidecar -- vip-sidecar status" in notes
    assert "192.0.2.10 is a documentation address" in notes
    _, notes = render_chart([EXAMPLES["alias"]], with_notes=True)
    assert "documentation address" not in notes
    assert "ingress: 10.20.0.100 (vhid 51, interface eth0)" in notes
    _, notes = render_chart(set_values={"vips": [{"vhid": 3, "addr": "2001:DB8::10"}]},
                            with_notes=True)
    assert "2001:DB8::10 is a documentation address (RFC 3849)" in notes
    _, notes = render_chart([EXAMPLES["dualstack"]], with_notes=True)
    assert "ingress-v6: fd00:20::100 (vhid 62, interface eth0)" in notes
    assert "documentation address" not in notes


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    whole = {"config", "resources", "livenessProbe", "readinessProbe", "updateStrategy",
             "nodeSelector"}  # fmt: skip

    def keys(node: Any, prefix: str = "") -> list[str]:
        if not isinstance(node, dict) or not node or prefix.rstrip(".") in whole:
            return [prefix.rstrip(".")]
        return [k for name, sub in node.items() for k in keys(sub, f"{prefix}{name}.")]

    missing = [k for k in keys(values) if f"`{k}`" not in readme]
    assert not missing, f"README.md values table lacks {missing}"


@pytest.mark.k8s_real
def test_monitoring_objects_are_optional_and_ship_the_tested_rules(kube, kube_ns) -> None:
    """ServiceMonitor + PrometheusRule: off by default; on, the rules are exactly the
    file `promtool test rules` checks (tests/integration/test_alert_rules.py)."""
    kinds = {m["kind"] for m in render_chart()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule", "Service"}
    manifests = render_chart(
        namespace=kube_ns,
        set_values={
            "metrics": {
                "serviceMonitor": {"enabled": True, "additionalLabels": {"release": "kps"}},
                "prometheusRule": {"enabled": True, "additionalLabels": {"release": "kps"}},
            }
        }
    )
    rule = one(manifests, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    assert rule["metadata"]["labels"]["release"] == "kps"
    monitor, service = one(manifests, "ServiceMonitor"), one(manifests, "Service")
    assert monitor["metadata"]["labels"]["release"] == "kps"
    # the monitor selects the Service, the Service selects the DaemonSet's pods, and the
    # job label the rules use (job="vip-sidecar") comes from the Service
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    pod_labels = one(manifests, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "vip-sidecar"
    assert service["spec"]["clusterIP"] == "None"
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert service["spec"]["ports"][0]["port"] == 9477
    # the core objects are accepted by the real apiserver (it has no Prometheus CRDs)
    core = [m for m in manifests if m["kind"] not in ("ServiceMonitor", "PrometheusRule")]
    errors = server_dry_run(kube, core, kube_ns)
    assert not errors, "\n".join(errors)
