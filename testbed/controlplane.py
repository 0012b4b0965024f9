"""A real Kubernetes control plane for the tests and bench.chaos: etcd + kube-apiserver on
loopback (or on the bed's root leg, `host=`, so daemons in network namespaces reach it).

The binaries come from tests/k8s/build.sh (built from Go modules, cached outside the work
tree). What this module adds is what a cluster would otherwise have done for us:

* a test CA, the apiserver's serving certificate, a service-account signing key (so
  TokenRequest works) and an admin bearer token (group system:masters);
* an audit log (Metadata for everything, the request body for Leases), read back as the
  list of every request a test made, with user, verb, resource and time: the real
  counterpart of what our old API double recorded;
* small admin helpers (raw JSON over HTTPS) for the objects a kubelet or controller
  manager would create: Namespaces with their `default` ServiceAccount, Nodes, Pods
  (they stay Pending: there is no kubelet or scheduler).

No controller manager runs: no garbage collection (tests use a fresh namespace each and
delete what they must by hand), and the aggregated admin/edit/view ClusterRoles are empty.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3

from testbed.harness import free_port, wait_for

BUILD = Path(__file__).resolve().parents[1] / "tests" / "k8s" / "build.sh"


class ControlPlaneError(RuntimeError):
    pass


def binaries() -> Path:
    """The bin directory: built (or found cached) by build.sh. Never skips: a failed build
    is an error the suite must show."""
    given = os.environ.get("VIP_SIDECAR_K8S_BIN")
    if given:
        return Path(given)
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise ControlPlaneError(f"tests/k8s/build.sh failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------ PKI
@dataclass
class Pki:
    """A test CA and the certificates issued from it (files in `dir`)."""

    dir: Path

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._ser, self._ec = x509, hashes, serialization, ec
        self._oid = NameOID
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vip-sidecar test CA")])
        now = dt.datetime.now(dt.UTC)
        self.ca_cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(self.ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_file = self._write("ca.crt", self.ca_cert.public_bytes(serialization.Encoding.PEM))
        # the service-account token signer: RSA, as kube-apiserver's default expects
        sa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.sa_key = self._write("sa.key", sa.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.sa_pub = self._write("sa.pub", sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def _write(self, name: str, data: bytes) -> Path:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return path

    def issue(self, cn: str, ips: Iterable[str] = (), dns: Iterable[str] = (),
              org: str | None = None) -> tuple[Path, Path]:
        """A leaf certificate for a server (ips/dns) or a client (org = group)."""
        x509, ser = self._x509, self._ser
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        attrs = [x509.NameAttribute(self._oid.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(self._oid.ORGANIZATION_NAME, org))
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name(attrs))
            .issuer_name(self.ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        sans: list[Any] = [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        sans += [x509.DNSName(d) for d in dns]
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self.ca_key, self._hashes.SHA256())
        stem = cn.replace(":", "_").replace("/", "_")
        crt = self._write(f"{stem}.crt", cert.public_bytes(ser.Encoding.PEM))
        pem = self._write(f"{stem}.key", key.private_bytes(
            ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()))
        return crt, pem


# ------------------------------------------------------------------------------ audit
@dataclass(frozen=True)
class AuditEntry:
    at: float  # stageTimestamp, unix seconds (the apiserver's clock: the same host)
    user: str
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    code: int
    request: dict[str, Any] | None
    user_agent: str
    uri: str

    @property
    def triple(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Request
    resources: [{group: coordination.k8s.io, resources: [leases]}]
    verbs: [create, update, patch]
  - level: Metadata
"""


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# ------------------------------------------------------------------------------ the server
@dataclass
class ControlPlane:
    """etcd + kube-apiserver, started by `start()`, stopped by `stop()`."""

    bin: Path
    #: the address the apiserver listens on and its certificate names (one address:
    #: kube-apiserver binds a single one)
    host: str = "127.0.0.1"
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vip-k8s-")))
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pki = Pki(self.workdir / "pki")
        self.port = free_port()
        self.url = f"https://{self.host}:{self.port}"
        self.admin_token = uuid.uuid4().hex
        self.audit_log = self.workdir / "audit.log"
        self._audit_pos = 0
        self._audit: list[AuditEntry] = []
        self._discovery: dict[str, dict[str, tuple[str, bool]]] = {}
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_file))
        self.http = urllib3.PoolManager(ssl_context=ctx, retries=False,
                                        timeout=urllib3.Timeout(connect=2, read=10))
        self.serving_cert = self.pki.issue("kube-apiserver", ips=[self.host],
                                           dns=["localhost", "kubernetes.default.svc"])

    # ---------------------------------------------------------------- processes
    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def start_etcd(self) -> None:
        self.etcd_port, peer = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self._spawn("etcd", [
            str(self.bin / "etcd"), "--name", "default",
            "--data-dir", str(self.workdir / "etcd"), "--unsafe-no-fsync",
            "--listen-client-urls", self.etcd_url, "--advertise-client-urls", self.etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer}",
            "--listen-metrics-urls", f"http://127.0.0.1:{free_port()}",
            "--log-level", "warn",
        ])
        wait_for(self._etcd_healthy, 30, interval=0.2, what="etcd /health")

    def _etcd_healthy(self) -> bool:
        try:
            r = urllib3.PoolManager().request("GET", f"{self.etcd_url}/health", timeout=1,
                                              retries=False)
        except urllib3.exceptions.HTTPError:
            return False
        return r.status == 200

    def start_apiserver(self) -> None:
        tokens = self.workdir / "tokens.csv"
        tokens.write_text(f'{self.admin_token},test-admin,test-admin-uid,"system:masters"\n')
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        crt, key = self.serving_cert
        self._spawn("kube-apiserver", [
            str(self.bin / "kube-apiserver"),
            "--etcd-servers", self.etcd_url,
            f"--bind-address={self.host}", f"--advertise-address={self.host}",
            f"--secure-port={self.port}",
            f"--tls-cert-file={crt}", f"--tls-private-key-file={key}",
            f"--client-ca-file={self.pki.ca_file}",
            f"--token-auth-file={tokens}",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={self.pki.sa_pub}",
            f"--service-account-signing-key-file={self.pki.sa_key}",
            "--allow-privileged=true",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--audit-policy-file={policy}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-mode=blocking",
            "--enable-priority-and-fairness=false",
            # the "kubernetes" Service endpoints would need a non-loopback address
            "--endpoint-reconciler-type=none",
            "--event-ttl=1h",
            "-v=1",
        ])
        wait_for(self.ready, 120, interval=0.2, what="kube-apiserver /readyz")

    def ready(self) -> bool:
        proc = self.procs.get("kube-apiserver")
        if proc is not None and proc.poll() is not None:
            raise ControlPlaneError(f"kube-apiserver exited {proc.returncode}:\n{self.tail()}")
        try:
            r = self.http.request("GET", f"{self.url}/readyz", timeout=2,
                                  headers={"Authorization": f"Bearer {self.admin_token}"})
        except urllib3.exceptions.HTTPError:
            return False
        return r.status == 200

    def tail(self, name: str = "kube-apiserver", n: int = 3000) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def start(self) -> ControlPlane:
        self.start_etcd()
        self.start_apiserver()
        return self

    def signal(self, name: str, sig: int) -> None:
        self.procs[name].send_signal(sig)

    def kill_apiserver(self) -> None:
        proc = self.procs["kube-apiserver"]
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for name in ("kube-apiserver", "etcd"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.http.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---------------------------------------------------------------- raw API
    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                content_type: str = "application/json", ok: Iterable[int] = (200, 201),
                query: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token or self.admin_token}",
                   "Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        url = self.url + path
        if query:
            url += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        r = self.http.request(method, url, body=data, headers=headers)
        doc = json.loads(r.data or b"{}") if r.data else {}
        ok = set(ok)
        if ok and r.status not in ok:
            raise ControlPlaneError(f"{method} {path} -> {r.status}: {doc.get('message', doc)}")
        return r.status, doc

    def get(self, path: str) -> dict[str, Any] | None:
        status, doc = self.request("GET", path, ok=(200, 404))
        return doc if status == 200 else None

    # ---------------------------------------------------------------- objects
    def namespace(self, prefix: str = "t") -> str:
        """A fresh namespace with the `default` ServiceAccount a controller would make."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
        self.request("POST", f"/api/v1/namespaces/{name}/serviceaccounts",
                     {"metadata": {"name": "default"}})
        return name

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
        return self.request("POST", "/api/v1/nodes", {
            "metadata": {"name": name, "labels": labels or {}},
        })[1]

    def add_pod(self, ns: str, name: str, node: str | None = None,
                labels: dict[str, str] | None = None,
                service_account: str = "default") -> dict[str, Any]:
        spec: dict[str, Any] = {
            "containers": [{"name": "vip-sidecar", "image": "vip-sidecar:test"}],
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
        }
        if node:
            spec["nodeName"] = node
        return self.request("POST", f"/api/v1/namespaces/{ns}/pods", {
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec,
        })[1]

    def lease(self, ns: str, name: str) -> dict[str, Any] | None:
        return self.get(f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}")

    def holder(self, ns: str, name: str) -> str | None:
        lease = self.lease(ns, name)
        return None if lease is None else lease.get("spec", {}).get("holderIdentity")

    def pod_labels(self, ns: str, name: str) -> dict[str, str]:
        pod = self.get(f"/api/v1/namespaces/{ns}/pods/{name}") or {}
        return dict(pod.get("metadata", {}).get("labels") or {})

    def node_labels(self, name: str) -> dict[str, str]:
        node = self.get(f"/api/v1/nodes/{name}") or {}
        return dict(node.get("metadata", {}).get("labels") or {})

    def events(self, ns: str) -> list[dict[str, Any]]:
        doc = self.get(f"/api/v1/namespaces/{ns}/events") or {}
        items = list(doc.get("items") or [])
        return sorted(items, key=lambda e: e["metadata"].get("creationTimestamp", ""))

    def service_account_token(self, ns: str, sa: str, seconds: int = 3600) -> str:
        _, doc = self.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        return str(doc["status"]["token"])

    def kubeconfig(self, path: Path, *, token: str | None = None, server: str | None = None,
                   namespace: str | None = None) -> str:
        ctx: dict[str, Any] = {"cluster": "test", "user": "u"}
        if namespace:
            ctx["namespace"] = namespace
        path.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "test",
            "clusters": [{"name": "test", "cluster": {
                "server": server or self.url, "certificate-authority": str(self.pki.ca_file)}}],
            "users": [{"name": "u", "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "test", "context": ctx}],
        }))
        return str(path)

    def resource_path(self, obj: dict[str, Any], namespace: str | None = None) -> str:
        """The REST path of an object, found through the server's own discovery."""
        api_version, kind = obj["apiVersion"], obj["kind"]
        if api_version not in self._discovery:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            doc = self.get(base) or {}
            self._discovery[api_version] = {
                r["kind"]: (r["name"], bool(r["namespaced"]))
                for r in doc.get("resources", []) if "/" not in r["name"]}
        found = self._discovery[api_version].get(kind)
        if found is None:
            raise ControlPlaneError(f"the apiserver serves no {kind} in {api_version}")
        plural, namespaced = found
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        name = obj["metadata"]["name"]
        if namespaced:
            ns = obj["metadata"].get("namespace") or namespace or "default"
            return f"{base}/namespaces/{ns}/{plural}/{name}"
        return f"{base}/{plural}/{name}"

    def apply(self, obj: dict[str, Any], *, namespace: str | None = None,
              dry_run: bool = True, token: str | None = None) -> tuple[int, dict[str, Any]]:
        """Server-side apply with strict field validation (dry run by default): the real
        apiserver's schema, defaulting and admission judge the object."""
        query = {"fieldManager": "vip-sidecar-tests", "force": "true",
                 "fieldValidation": "Strict"}
        if dry_run:
            query["dryRun"] = "All"
        return self.request("PATCH", self.resource_path(obj, namespace), obj, token=token,
                            content_type="application/apply-patch+yaml", ok=(), query=query)

    # ---------------------------------------------------------------- audit
    def audit(self) -> list[AuditEntry]:
        """Every completed request so far (the log is written synchronously)."""
        if self.audit_log.exists():
            with self.audit_log.open("rb") as f:
                f.seek(self._audit_pos)
                chunk = f.read()
            end = chunk.rfind(b"\n") + 1
            self._audit_pos += end
            for line in chunk[:end].splitlines():
                e = json.loads(line)
                if e.get("stage") != "ResponseComplete":
                    continue
                ref = e.get("objectRef") or {}
                self._audit.append(AuditEntry(
                    at=_ts(e["stageTimestamp"]), user=e["user"]["username"], verb=e["verb"],
                    group=ref.get("apiGroup", ""), resource=ref.get("resource", ""),
                    subresource=ref.get("subresource", ""),
                    namespace=ref.get("namespace", ""), name=ref.get("name", ""),
                    code=int((e.get("responseStatus") or {}).get("code", 0)),
                    request=e.get("requestObject"), user_agent=e.get("userAgent", ""),
                    uri=e.get("requestURI", "")))
        return list(self._audit)

    def requests_by(self, user: str, since: float = 0.0) -> list[AuditEntry]:
        return [e for e in self.audit() if e.user == user and e.at >= since]

    def lease_writes(self, ns: str, name: str) -> list[tuple[float, str | None]]:
        """(server time, holder) of every successful Lease write."""
        out = []
        for e in self.audit():
            if (e.resource == "leases" and e.namespace == ns and e.verb in ("create", "update")
                    and e.code in (200, 201) and e.request
                    and (e.name == name or e.request.get("metadata", {}).get("name") == name)
                    and "dryRun" not in e.uri):
                out.append((e.at, e.request.get("spec", {}).get("holderIdentity")))
        return out
