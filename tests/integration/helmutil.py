"""The real helm CLI (built from Go modules by tests/k8s/build.sh) for the chart tests.

`render_chart` is `helm template`, `lint_chart` is `helm lint --strict`, `install` /
`upgrade` / `uninstall` run against the real kube-apiserver of tests/k8s. Values are
layered the way helm layers `-f` files and `--set` (maps merge key by key), written to a
temporary values file and passed with `-f`, so what helm sees is exactly what a user's
values file would say. Helm's own error text reaches the tests unchanged (HelmError).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "vip-sidecar"
# every example values file, by the word after "values-" (a new file is tested at once)
EXAMPLES = {
    p.stem.removeprefix("values-"): f"examples/{p.name}"
    for p in sorted((CHART / "examples").glob("values-*.yaml"))
}
RELEASE = "vip"
NAMESPACE = "vip-system"


class HelmError(RuntimeError):
    """Helm refused the chart or the values (schema, template `fail`, render error)."""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialise concurrent test runs on a shared cache (e.g. the buildah base image)."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@functools.cache
def helm_bin() -> str:
    from testbed.controlplane import binaries

    return str(binaries() / "helm")


@functools.cache
def kube_version() -> str:
    """The version of the kube-apiserver we build: helm template renders for it."""
    text = (REPO / "tests" / "k8s" / "build.sh").read_text()
    for line in text.splitlines():
        if line.startswith("K8S_VERSION="):
            return line.split(":-", 1)[1].rstrip("}").strip()
    raise RuntimeError("K8S_VERSION not found in tests/k8s/build.sh")


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
    merged: dict[str, Any] = {}
    for name in values_files or []:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = CHART / name
        data = yaml.safe_load(path.read_text()) or {}
        merged = deep_merge(merged, data)
    return deep_merge(merged, _expand_dotted(set_values or {}))


# ---------------------------------------------------------------------- the CLI
def helm(*args: str, kubeconfig: str | None = None, check: bool = True,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="vip-helm-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HELM_", "KUBE"))}
        env.update(HELM_CACHE_HOME=f"{tmp}/cache", HELM_CONFIG_HOME=f"{tmp}/config",
                   HELM_DATA_HOME=f"{tmp}/data")
        if kubeconfig:
            env["KUBECONFIG"] = kubeconfig
        proc = subprocess.run([helm_bin(), *args], capture_output=True, text=True,
                              timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise HelmError(proc.stderr.strip() or proc.stdout.strip())
    return proc


@contextlib.contextmanager
def values_file(values: Mapping[str, Any]) -> Iterator[str]:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="vip-values-") as fh:
        yaml.safe_dump(dict(values), fh, sort_keys=False)
        fh.flush()
        yield fh.name


# `helm template` renders NOTES.txt but never prints it; this template, added to a copy of
# the chart, carries the rendered notes out as a ConfigMap value
_NOTES_TEMPLATE = """apiVersion: v1
kind: ConfigMap
metadata:
  name: vip-sidecar-tests-rendered-notes
data:
  NOTES.txt: {{ include (print .Chart.Name "/templates/NOTES.txt") . | toJson }}
"""
_NOTES_NAME = "vip-sidecar-tests-rendered-notes"


def render_chart(
    values_files: list[str] | None = None,
    set_values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    with_notes: bool = False,
) -> Any:
    """`helm template`: the rendered manifests as dicts. Relative values files are tried
    against the chart directory too (e.g. "examples/values-aws.yaml"); set_values is
    layered last, dotted keys allowed like `--set`. HelmError carries helm's message.
    with_notes=True returns (manifests, the rendered NOTES.txt)."""
    with contextlib.ExitStack() as stack:
        chart = CHART
        if with_notes:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vip-chart-")))
            chart = tmp / CHART.name
            shutil.copytree(CHART, chart)
            (chart / "templates" / "zz-test-notes.yaml").write_text(_NOTES_TEMPLATE)
        vf = stack.enter_context(values_file(merged_values(values_files, set_values)))
        out = helm("template", release, str(chart), "--namespace", namespace, "-f", vf,
                   "--kube-version", kube_version()).stdout
    docs = [doc for doc in yaml.safe_load_all(out) if doc]
    if not with_notes:
        return docs
    notes = next(d for d in docs if d["metadata"]["name"] == _NOTES_NAME)
    return [d for d in docs if d is not notes], notes["data"]["NOTES.txt"]


def lint_chart(values_files: list[str] | None = None,
               set_values: dict[str, Any] | None = None) -> subprocess.CompletedProcess[str]:
    """`helm lint --strict` (warnings fail too); the finished process, never raising."""
    with values_file(merged_values(values_files, set_values)) as vf:
        return helm("lint", str(CHART), "--strict", "-f", vf, "--kube-version",
                    kube_version(), check=False)


def install(kubeconfig: str, namespace: str, values_files: list[str] | None = None,
            set_values: dict[str, Any] | None = None, *, release: str = RELEASE,
            upgrade: bool = False) -> dict[str, Any]:
    """`helm install` (or `helm upgrade`) against a real apiserver; helm's release JSON.
    Never `--wait`: without a kubelet the DaemonSet's pods never run."""
    verb = "upgrade" if upgrade else "install"
    with values_file(merged_values(values_files, set_values)) as vf:
        out = helm(verb, release, str(CHART), "--namespace", namespace, "-f", vf,
                   "--output", "json", kubeconfig=kubeconfig).stdout
    doc: dict[str, Any] = json.loads(out)
    return doc


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def one(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = by_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, got {[m['metadata']['name'] for m in found]}"
    return found[0]
