"""The image built from the real Dockerfile (tests/integration/imageutil.py): metadata,
entry point, and the non-root file-capability interpreter."""

from __future__ import annotations

import json

import pytest

from tests.integration.imageutil import (
    buildah,
    container,
    ensure_base_image,
    human,
    image_bytes,
    project_version,
    run_in,
)

pytestmark = [pytest.mark.buildah, pytest.mark.timeout(2400)]


def test_image_metadata_and_size(built_image: str) -> None:
    info = json.loads(buildah("inspect", "--type", "image", built_image).stdout)
    config = info["OCIv1"]["config"]
    assert config["Entrypoint"] == ["vip-sidecar"]
    assert config["Cmd"] == ["run"]
    user = config.get("User", "")
    assert user and user.split(":")[0] not in ("", "0", "root"), f"image runs as {user!r}"
    size = image_bytes(built_image)
    base = image_bytes(ensure_base_image())
    print(
        f"\n[image] {built_image}: size {size} bytes ({human(size)}; "
        f"{human(size - base)} on top of the {human(base)} test base), user {user}"
    )
    assert base < size < 1024**3


def test_version_and_help_run_inside(built_image: str) -> None:
    with container(built_image) as ctr:
        version = run_in(ctr, "vip-sidecar", "--version")
        assert version.returncode == 0, version.stderr
        assert version.stdout.strip() == f"vip-sidecar {project_version()}"
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
            "/opt/vip-sidecar/bin/python3-netcaps", "-m", "vip_sidecar", "--version",
            user="10001:10001", caps=caps,
        )  # fmt: skip
        assert mod.returncode == 0 and project_version() in mod.stdout, mod
