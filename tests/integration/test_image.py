"""Build the real Dockerfile with buildah and run the image.

Users build the Dockerfile with its default base (an official python:*-slim image). This
machine reaches no container registry, so the test builds a base of its own: a Debian
bookworm minbase made by debootstrap, with python3 and python3-venv, the host's CA
bundle and PIP_CERT pointing at it (pip inside the build then reaches the package
index through whatever TLS interception the host trusts). The base rootfs tarball and
the committed base image are cached under /var/tmp/vip-sidecar-buildah (override with
VIP_SIDECAR_BUILDAH_CACHE), so only the first run pays for debootstrap.

Every image and container the test makes is removed again, except the cached base.
Needs root, buildah and debootstrap (Debian packages).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.helmutil import file_lock

pytestmark = [pytest.mark.buildah, pytest.mark.timeout(2400)]

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("VIP_SIDECAR_BUILDAH_CACHE", "/var/tmp/vip-sidecar-buildah"))
STORAGE = CACHE / "storage"
RUNROOT = Path("/run/vip-sidecar-buildah")
MIRROR = os.environ.get("VIP_SIDECAR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv")
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CA_IN_IMAGE = "/etc/ssl/certs/host-ca-bundle.crt"
BASE_REPO = "localhost/vip-sidecar-test-base"

ENV = {
    **os.environ,
    "STORAGE_DRIVER": "vfs",
    "BUILDAH_ISOLATION": "chroot",
}


def _base_key() -> str:
    """Changes whenever the base would come out different: suite, packages, CA bundle."""
    h = hashlib.sha256()
    h.update(f"{SUITE} {MIRROR} {' '.join(PACKAGES)} v1".encode())
    h.update(HOST_CA.read_bytes())
    return h.hexdigest()[:16]


def buildah(
    *args: str, timeout: float = 300, check: bool = True
) -> subprocess.CompletedProcess[str]:
    cmd = [
        "buildah",
        "--root",
        str(STORAGE),
        "--runroot",
        str(RUNROOT),
        "--storage-driver",
        "vfs",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
        )
    return proc


def _image_exists(ref: str) -> bool:
    return buildah("inspect", "--type", "image", ref, check=False).returncode == 0


def _debootstrap_tarball(tarball: Path) -> None:
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="rootfs-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        proc = subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                SUITE,
                str(rootfs),
                MIRROR,
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if proc.returncode != 0:
            log = rootfs / "debootstrap" / "debootstrap.log"
            detail = log.read_text()[-3000:] if log.exists() else proc.stderr[-3000:]
            raise AssertionError(f"debootstrap failed ({proc.returncode}):\n{detail}")
        shutil.copyfile(HOST_CA, rootfs / CA_IN_IMAGE.lstrip("/"))
        # a smaller base: no package lists or downloaded .debs
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / junk).glob("*"):
                if entry.is_file():
                    entry.unlink()
        partial = tarball.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs), "-cf", str(partial), "."],
            check=True,
            timeout=600,
        )
        partial.rename(tarball)


def ensure_base_image() -> str:
    """The debootstrap base as a local image, built once and then reused."""
    key = _base_key()
    ref = f"{BASE_REPO}:{key}"
    with file_lock(CACHE / "base.lock"):
        if _image_exists(ref):
            return ref
        tarball = CACHE / f"{SUITE}-minbase-{key}.tar"
        if not tarball.exists():
            _debootstrap_tarball(tarball)
        ctr = buildah("from", "scratch").stdout.strip()
        try:
            mnt = buildah("mount", ctr).stdout.strip()
            subprocess.run(
                ["tar", "--numeric-owner", "--xattrs", "-C", mnt, "-xf", str(tarball)],
                check=True,
                timeout=600,
            )
            buildah("umount", ctr)
            buildah(
                "config",
                "--env", f"PIP_CERT={CA_IN_IMAGE}",
                "--env", "LANG=C.UTF-8",
                "--env", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--cmd", "/bin/bash",
                "--label", f"vip-sidecar.test-base={key}",
                ctr,
            )  # fmt: skip
            buildah("commit", "--quiet", ctr, ref, timeout=600)
        finally:
            buildah("rm", ctr, check=False)
        # older bases (another CA bundle, other packages) are not needed any more
        listing = buildah("images", "--json", check=False).stdout or "[]"
        for image in json.loads(listing):
            names = image.get("names") or []
            if any(n.startswith(BASE_REPO + ":") for n in names) and ref not in names:
                buildah("rmi", image["id"], check=False)
        return ref


def _project_version() -> str:
    with open(REPO / "pyproject.toml", "rb") as fh:
        return str(tomllib.load(fh)["project"]["version"])


def _image_bytes(ref: str) -> int:
    """Uncompressed size: the sum of the image's layer tarballs."""
    info = json.loads(buildah("inspect", "--type", "image", ref).stdout)
    manifest = json.loads(info["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@pytest.fixture(scope="module")
def built_image() -> Iterator[str]:
    if os.geteuid() != 0:
        pytest.skip("needs root (buildah with the vfs driver and chroot isolation)")
    for tool in ("buildah", "debootstrap"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed (apt-get install -y buildah debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = ensure_base_image()
    base_done = time.monotonic()
    tag = f"localhost/vip-sidecar-test:{uuid.uuid4().hex[:12]}"
    try:
        buildah(
            "build",
            "--isolation", "chroot",
            "--pull=never",
            "--build-arg", f"BASE_IMAGE={base}",
            "--file", str(REPO / "Dockerfile"),
            "--tag", tag,
            str(REPO),
            timeout=1800,
        )  # fmt: skip
        built = time.monotonic()
        print(
            f"\n[image] base {base} ready in {base_done - started:.1f}s; "
            f"Dockerfile built in {built - base_done:.1f}s"
        )
        yield tag
    finally:
        buildah("rmi", "--force", tag, check=False)
        buildah("rmi", "--prune", check=False)  # dangling builder-stage leftovers
        print(f"[image] total incl. cleanup {time.monotonic() - started:.1f}s")


@contextlib.contextmanager
def container(image: str) -> Iterator[str]:
    ctr = buildah("from", "--pull=never", image).stdout.strip().splitlines()[-1]
    try:
        yield ctr
    finally:
        buildah("rm", ctr, check=False)


def run_in(
    ctr: str, *cmd: str, user: str | None = None, caps: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    args = ["run", "--isolation", "chroot"]
    if user:
        args += ["--user", user]
    for cap in caps:
        args += ["--cap-add", cap]
    return buildah(*args, ctr, "--", *cmd, timeout=120, check=False)


def test_image_metadata_and_size(built_image: str) -> None:
    info = json.loads(buildah("inspect", "--type", "image", built_image).stdout)
    config = info["OCIv1"]["config"]
    assert config["Entrypoint"] == ["vip-sidecar"]
    assert config["Cmd"] == ["run"]
    user = config.get("User", "")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"image runs as {user!r}"
    size = _image_bytes(built_image)
    base = _image_bytes(ensure_base_image())
    print(
        f"\n[image] {built_image}: size {size} bytes ({_human(size)}; "
        f"{_human(size - base)} on top of the {_human(base)} test base), user {user}"
    )
    assert base < size < 1024**3


def test_version_and_help_run_inside(built_image: str) -> None:
    with container(built_image) as ctr:
        version = run_in(ctr, "vip-sidecar", "--version")
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"vip-sidecar {_project_version()}"
        helptext = run_in(ctr, "vip-sidecar", "run", "--help")
        assert helptext.returncode == 0, helptext.stderr
        for flag in ("--interface", "--vhid", "--passfile", "--provider", "--http"):
            assert flag in helptext.stdout
        # the entry point really validates: no configuration is a config error (exit 2)
        bare = run_in(ctr, "vip-sidecar", "run")
        assert bare.returncode == 2, (bare.stdout, bare.stderr)
        assert "config error" in bare.stderr
        # nothing outside the venv was needed: only the wheels' packages are there
        pip = run_in(ctr, "/opt/vip-sidecar/bin/python", "-c", "import pip")
        assert pip.returncode != 0, "pip should have been removed from the runtime venv"


def test_nonroot_netcaps_interpreter(built_image: str) -> None:
    """A non-root process gets NET_RAW only through the file-capability interpreter."""
    probe = (
        "import os, socket; "
        "print(os.getxattr('/opt/vip-sidecar/bin/python3-netcaps', 'security.capability').hex()); "
        "socket.socket(socket.AF_INET, socket.SOCK_RAW, 112).close(); print('raw-ok')"
    )
    caps = ("CAP_NET_ADMIN", "CAP_NET_RAW")
    with container(built_image) as ctr:
        capped = run_in(
            ctr, "/opt/vip-sidecar/bin/python3-netcaps", "-c", probe, user="10001:10001", caps=caps
        )
        assert capped.returncode == 0, capped.stderr
        lines = capped.stdout.split()
        assert lines[0] == "0100000200300000000000000000000000000000"  # cap_net_admin,raw+ep
        assert lines[-1] == "raw-ok"
        plain = run_in(
            ctr, "/opt/vip-sidecar/bin/python", "-c", probe, user="10001:10001", caps=caps
        )
        assert plain.returncode != 0 and "PermissionError" in plain.stderr, plain
        # the module entry point works from the capped interpreter (what the chart runs)
        mod = run_in(
            ctr,
            "/opt/vip-sidecar/bin/python3-netcaps", "-m", "sidecar", "--version",
            user="10001:10001", caps=caps,
        )  # fmt: skip
        assert mod.returncode == 0 and _project_version() in mod.stdout, mod
