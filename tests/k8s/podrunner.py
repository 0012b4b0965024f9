"""Run the chart's DaemonSet pod with podman, the way a kubelet would on one node.

No kubelet exists here, so this does its part for one hostNetwork pod: it takes the
container of the rendered DaemonSet and runs the image with
* the node's network namespace (`--network ns:/run/netns/<node>`: hostNetwork),
* the container securityContext: capabilities (drop ALL, add the listed ones), the user,
  read-only root, no_new_privs when allowPrivilegeEscalation is false, the RuntimeDefault
  seccomp profile (podman's default),
* the env with its fieldRefs resolved (status.hostIP, spec.nodeName, metadata.name,
  metadata.namespace) and $(VAR) expansion, plus KUBERNETES_SERVICE_HOST/PORT,
* the volumes: the ConfigMap and the Secret as files with the Secret's defaultMode (group
  fsGroup), emptyDirs as tmpfs, and the ServiceAccount token, CA and namespace at
  /var/run/secrets/kubernetes.io/serviceaccount where the in-cluster client looks.
What differs from a kubelet: no probes are run, no restarts, no cgroup limits. The OCI
runtime is runc: crun 1.8 (Debian's default for podman) refuses this machine's hybrid
cgroup layout, and podman's default rlimits exceed the hard limits set here, so the pods
run with lower ones (nofile 1024, nproc 4096).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass
class PodmanEnv:
    root: Path
    runroot: Path

    def cmd(self, *args: str) -> list[str]:
        return ["podman", "--runtime", "runc", "--root", str(self.root),
                "--runroot", str(self.runroot), "--storage-driver", "vfs",
                "--cgroup-manager", "cgroupfs", "--events-backend", "file", *args]

    def run(self, *args: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:2])} exited {proc.returncode}:\n"
                                 f"{proc.stderr[-3000:]}")
        return proc


def _by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m.get("kind") == kind]


def container_env(container: dict[str, Any], fields: dict[str, str],
                  base: dict[str, str] | None = None) -> dict[str, str]:
    """The container's environment as the kubelet builds it: `value`s with $(VAR)
    expanded from the variables before them, `fieldRef`s from `fields`."""
    env = dict(base or {})
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)",
                                       lambda m: env.get(m.group(1), m.group(0)),
                                       str(item["value"]))
        else:
            env[item["name"]] = fields[item["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


def pod_args(manifests: list[dict[str, Any]], *, netns: str, host_ip: str, node: str,
             pod: str, namespace: str, files: Path, api: tuple[str, int], token: str,
             ca: str) -> tuple[list[str], list[str]]:
    """(podman run options, the container's command line after the image)."""
    (ds,) = _by_kind(manifests, "DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    sc = c.get("securityContext") or {}
    psc = spec.get("securityContext") or {}
    opts = ["--network", f"ns:/run/netns/{netns}", "--cap-drop", "ALL",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
    for cap in (sc.get("capabilities") or {}).get("add", []):
        opts += ["--cap-add", f"CAP_{cap}"]
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    gid = sc.get("runAsGroup", psc.get("runAsGroup", uid))
    if uid is not None:
        opts += ["--user", f"{uid}:{gid}"]
    fs_group = psc.get("fsGroup")
    if fs_group is not None:
        opts += ["--group-add", str(fs_group)]
    if sc.get("readOnlyRootFilesystem"):
        opts.append("--read-only")
    if sc.get("allowPrivilegeEscalation") is False:
        opts += ["--security-opt", "no-new-privileges"]
    assert sc.get("privileged") is False

    # the pods here are single-stack: status.hostIPs lists the one address
    fields = {"status.hostIP": host_ip, "status.hostIPs": host_ip, "spec.nodeName": node,
              "metadata.name": pod, "metadata.namespace": namespace}
    env = container_env(c, fields, {"KUBERNETES_SERVICE_HOST": api[0],
                                    "KUBERNETES_SERVICE_PORT": str(api[1])})
    for name, value in env.items():
        opts += ["--env", f"{name}={value}"]

    volumes = {v["name"]: v for v in spec["volumes"]}
    configmaps = {m["metadata"]["name"]: m for m in _by_kind(manifests, "ConfigMap")}
    secrets = {m["metadata"]["name"]: m for m in _by_kind(manifests, "Secret")}
    for mount in c.get("volumeMounts", []):
        vol = volumes[mount["name"]]
        target = mount["mountPath"]
        ro = ":ro" if mount.get("readOnly") else ""
        if "emptyDir" in vol:
            mode = "1777" if target == "/tmp" else "0777"  # what the kubelet makes
            opts += ["--tmpfs", f"{target}:rw,mode={mode}"]
            continue
        src = files / mount["name"]
        src.mkdir(parents=True, exist_ok=True)
        if "configMap" in vol:
            data = configmaps[vol["configMap"]["name"]]["data"]
            mode = vol["configMap"].get("defaultMode", 0o644)
            items = {k: v.encode() for k, v in data.items()}
        else:
            secret = secrets[vol["secret"]["secretName"]]
            mode = vol["secret"].get("defaultMode", 0o644)
            items = {k: base64.b64decode(v) for k, v in secret["data"].items()}
        for key, value in items.items():
            path = src / key
            path.write_bytes(value)
            path.chmod(mode)
            if fs_group is not None:  # the kubelet chowns volume files to fsGroup
                os.chown(path, 0, int(fs_group))
        src.chmod(0o755)
        opts += ["--volume", f"{src}:{target}{ro}"]
    if spec.get("automountServiceAccountToken", True):
        sa = files / "serviceaccount"
        sa.mkdir(parents=True, exist_ok=True)
        (sa / "token").write_text(token)
        (sa / "ca.crt").write_text(ca)
        (sa / "namespace").write_text(namespace)
        for f in sa.iterdir():
            f.chmod(0o644)
        opts += ["--volume", f"{sa}:{SA_DIR}:ro"]
    command = list(c.get("command") or []) + list(c.get("args") or [])
    if c.get("command"):
        opts += ["--entrypoint", c["command"][0]]
        command = command[1:]
    return opts, command
