"""Build the real Dockerfile with buildah, and run the image (buildah, podman).

Users build the Dockerfile with its default base (an official python:*-slim image). This
machine reaches no container registry, so the tests build a base of their own: a Debian
bookworm minbase made by debootstrap, with python3 and python3-venv, the host's CA
bundle and PIP_CERT pointing at it (pip inside the build then reaches the package
index through whatever TLS interception the host trusts). The base rootfs tarball and
the committed base image are cached under /var/tmp/vip-sidecar-buildah (override with
VIP_SIDECAR_BUILDAH_CACHE), so only the first run pays for debootstrap.

Every image and container the tests make is removed again, except the cached base.
Needs root, buildah, podman and debootstrap (Debian packages).
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
import uuid
from collections.abc import Iterator
from pathlib import Path

from tests.integration.helmutil import file_lock

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


def project_version() -> str:
    # the version lives in one place, sidecar/__init__.py (pyproject reads it dynamically)
    from vip_sidecar import __version__

    return __version__


def image_bytes(ref: str) -> int:
    """Uncompressed size: the sum of the image's layer tarballs."""
    info = json.loads(buildah("inspect", "--type", "image", ref).stdout)
    manifest = json.loads(info["Manifest"])
    return sum(int(layer["size"]) for layer in manifest["layers"])


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextlib.contextmanager
def built_image() -> Iterator[str]:
    # CI runs as root with these installed (.ci/run): a missing tool fails, never skips
    assert os.geteuid() == 0, "needs root (buildah with the vfs driver and chroot isolation)"
    for tool in ("buildah", "podman", "debootstrap"):
        assert shutil.which(tool), f"{tool} not installed (apt-get install -y {tool})"
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


