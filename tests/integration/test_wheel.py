"""`python -m build` makes an sdist and a wheel that `twine check` accepts; a fresh venv
holding only that wheel (and its PyPI dependencies), run from outside the source tree,
prints the version, installs the man page and fails a VIP over in network namespaces."""

import os
import subprocess
import sys
import tarfile
import time
import venv
import zipfile

import pytest

import vip_sidecar
from tests.integration.harness import NETNS, REPO, Proc, wait_for

VERSION = vip_sidecar.__version__


def run(*argv, cwd=None, env=None, timeout=600):
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert res.returncode == 0, f"{argv}: {res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    res = run(sys.executable, "-m", "build", "--outdir", str(out), str(REPO), timeout=900)
    # the SPDX licence string removes setuptools' deprecation warning for license tables
    assert "License classifiers are deprecated" not in res.stdout + res.stderr
    assert "`project.license` as a TOML table is deprecated" not in res.stdout + res.stderr
    return out


@pytest.fixture(scope="module")
def clean_venv(dist, tmp_path_factory):
    where = tmp_path_factory.mktemp("venv")
    venv.create(where / "v", with_pip=True)
    py = where / "v" / "bin" / "python"
    wheel = next(dist.glob("*.whl"))
    # cwd is a scratch dir and PYTHONPATH unset: nothing can come from the source tree
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    run(str(py), "-m", "pip", "install", "-q", str(wheel), cwd=where, env=env, timeout=900)
    return where / "v", env


def test_sdist_and_wheel_pass_twine_check(dist):
    wheel = next(dist.glob(f"vip_sidecar-{VERSION}-py3-none-any.whl"))
    sdist = next(dist.glob(f"vip_sidecar-{VERSION}.tar.gz"))
    res = run(sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist))
    assert res.stdout.count("PASSED") == 2
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = zf.read(f"vip_sidecar-{VERSION}.dist-info/METADATA").decode()
    assert "License-Expression: BSD-2-Clause" in meta
    assert f"Version: {VERSION}" in meta
    assert f"vip_sidecar-{VERSION}.dist-info/licenses/LICENSE" in names
    assert f"vip_sidecar-{VERSION}.data/data/share/man/man8/vip-sidecar.8" in names
    assert not [n for n in names if n.startswith("tests/")]
    # every module of the source tree is shipped under the import name we own (sidecar/ as
    # vip_sidecar, providers/ as vip_sidecar.providers), and nothing under the folder names
    folders = (("sidecar", "vip_sidecar"), ("providers", "vip_sidecar/providers"))
    source = {
        f"{installed}/{f.relative_to(REPO / folder)}"
        for folder, installed in folders
        for f in (REPO / folder).rglob("*.py")  # rglob does not follow sidecar/providers
    }
    modules = {n for n in names if n.endswith(".py")}
    assert source == modules, (sorted(source - modules), sorted(modules - source))
    assert not [n for n in names if n.split("/")[0] in ("sidecar", "providers")]
    with tarfile.open(sdist) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
    for path in ("LICENSE", "packaging/man/vip-sidecar.8", "packaging/systemd/vip-sidecar.service",
                 "packaging/systemd/vip-sidecar@.service", "sidecar/sdnotify.py"):  # fmt: skip
        assert path in members, path


def test_clean_venv_runs_the_wheel(clean_venv, tmp_path):
    v, env = clean_venv
    out = run(str(v / "bin" / "vip-sidecar"), "--version", cwd=tmp_path, env=env).stdout
    assert out.strip() == f"vip-sidecar {VERSION}"
    where = run(str(v / "bin" / "python"), "-c", "import vip_sidecar; print(vip_sidecar.__file__)",
                cwd=tmp_path, env=env).stdout  # fmt: skip
    assert where.startswith(str(v)), where
    page = v / "share" / "man" / "man8" / "vip-sidecar.8"
    assert page.read_text() == (REPO / "packaging/man/vip-sidecar.8").read_text()


@NETNS
@pytest.mark.netns
def test_clean_venv_fails_over_in_netns(clean_venv, make_topo):
    v, env = clean_venv
    topo = make_topo(2)
    h1, h2 = topo.hosts
    exe = str(v / "bin" / "vip-sidecar")
    nodes = []
    for host, skew in ((h1, "0"), (h2, "50")):
        argv = [exe, "run", "-i", "eth0", "-s", host.ip, "-v", "61", "-p", "pw",
                "-a", topo.vip(), "-k", skew, "--provider", "alias", "--facility", "none",
                "--log-format", "json"]  # fmt: skip
        proc = Proc(host, argv, topo.workdir / f"wheel-{host.ns}.log", env=env)
        topo.procs.append(proc)
        nodes.append(proc)
        if skew == "0":
            wait_for(lambda: h1.has_address(topo.vip()), 8, what="h1 MASTER with the VIP")
    time.sleep(2)
    assert h1.has_address(topo.vip()) and not h2.has_address(topo.vip())
    t0 = time.monotonic()
    nodes[0].signal(15)
    assert nodes[0].wait(15) == 0
    wait_for(lambda: h2.has_address(topo.vip()), 5, what="h2 takes the VIP")
    print(f"\nwheel-only venv: failover on SIGTERM in {time.monotonic() - t0:.2f}s")
    assert not h1.has_address(topo.vip())
