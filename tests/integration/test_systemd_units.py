"""packaging/systemd: both units pass `systemd-analyze verify` verbatim (in a scratch
root that has /usr/bin/vip-sidecar and the distribution's units, no PID 1 needed), keep
the same hardening, and the exposure score the docs quote is the one systemd computes."""

import os
import re
import shutil
import subprocess

import pytest

from tests.integration.harness import REPO

UNITS = REPO / "packaging" / "systemd"
NAMES = ("vip-sidecar.service", "vip-sidecar@.service")
pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="needs Debian's systemd package"
)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A root directory holding the units where systemd looks for them."""
    root = tmp_path_factory.mktemp("sdroot")
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "usr/bin").mkdir()
    exe = root / "usr/bin/vip-sidecar"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    (root / "etc/systemd/system").mkdir(parents=True)
    for name in NAMES:
        shutil.copy(UNITS / name, root / "etc/systemd/system" / name)
    return root


def analyze(root, *args, env=None):
    return subprocess.run(
        ["systemd-analyze", *args, f"--root={root}"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize("unit", ["vip-sidecar.service", "vip-sidecar@web.service"])
def test_units_verify_without_a_single_warning(root, unit, tmp_path):
    # --man=yes: Documentation=man:vip-sidecar(8) must resolve, to the generated page
    (tmp_path / "man8").mkdir()
    shutil.copy(REPO / "packaging" / "man" / "vip-sidecar.8", tmp_path / "man8")
    env = {"PATH": os.environ["PATH"], "MANPATH": str(tmp_path)}
    res = analyze(root, "verify", "--man=yes", unit, env=env)
    # verify exits 0 on unknown keys and bad values; those are warnings on stderr
    assert res.returncode == 0 and res.stderr.strip() == "", res.stderr


def test_verify_does_catch_a_broken_unit(root, tmp_path):
    bad = root / "etc/systemd/system/vip-sidecar-broken.service"
    bad.write_text((UNITS / NAMES[0]).read_text().replace("WatchdogSec=10", "WatchdogSec=ten"))
    try:
        res = analyze(root, "verify", "--man=no", "vip-sidecar-broken.service")
        assert "Failed to parse sec value" in res.stderr
    finally:
        bad.unlink()


def directives(name):
    out = {}
    for line in (UNITS / name).read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_both_units_share_notify_watchdog_and_hardening():
    single, template = (directives(n) for n in NAMES)
    per_instance = {"ExecStart", "ExecReload", "RuntimeDirectory"}
    for key in set(single) | set(template):
        if key not in per_instance and key != "Description":
            assert single.get(key) == template.get(key), key
    assert single["Type"] == ["notify"] and single["WatchdogSec"] == ["10"]
    for key in ("AmbientCapabilities", "CapabilityBoundingSet"):
        assert single[key] == ["CAP_NET_ADMIN CAP_NET_RAW"]
    for key in ("NoNewPrivileges", "PrivateTmp"):
        assert single[key] == ["yes"]
    assert single["ProtectSystem"] == ["strict"]
    assert single["User"] == ["vip-sidecar"]
    assert "%i.yaml" in template["ExecStart"][0]
    assert template["ExecReload"][0].endswith(
        "ctl reload --socket /run/vip-sidecar/%i/control.sock"
    )
    assert single["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK AF_PACKET"]


def test_security_exposure_is_the_one_the_docs_quote(root):
    docs = (REPO / "docs" / "systemd.md").read_text()
    for unit in ("vip-sidecar.service", "vip-sidecar@web.service"):
        res = analyze(root, "security", "--offline=yes", "--no-pager", unit)
        m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", res.stdout + res.stderr)
        assert m, res.stdout + res.stderr
        print(f"\n{unit}: exposure {m.group(1)} {m.group(2)}")
        assert float(m.group(1)) <= 3.0
        assert f"exposure level {m.group(1)} ({m.group(2)})" in docs
