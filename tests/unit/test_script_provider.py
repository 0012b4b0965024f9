"""Script provider: ucarp argv, timeout kill, exit status, fail_on_error."""

import time

import pytest

from tests.unit.fakes import vip_config
from vip_sidecar.config import Config, ProviderSpec
from vip_sidecar.providers.base import VipContext
from vip_sidecar.providers.script import ScriptError, ScriptProvider


def vip(**kw):
    return vip_config(interface="eth9", **kw)


def script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return str(p)


async def test_argv_exactly_like_ucarp(tmp_path):
    out = tmp_path / "args"
    s = script(tmp_path, "up", f'for a in "$0" "$#" "$@"; do echo "$a"; done > {out}')
    v = vip(upscript=s, xparam="two words")
    prov = ScriptProvider(ProviderSpec("script"), v, Config(vips=(v,)))
    await prov.up(VipContext(v, "n"))
    assert out.read_text().splitlines() == [s, "3", "eth9", "10.0.0.9", "two words"]


async def test_exit_status_logged_and_ignored_by_default(tmp_path, caplog):
    s = script(tmp_path, "down", "exit 3")
    v = vip(downscript=s)
    prov = ScriptProvider(ProviderSpec("script"), v, Config(vips=(v,)))
    assert await prov.run(s, VipContext(v, "n")) == 3
    strict = ScriptProvider(ProviderSpec("script", {"fail_on_error": True}), v, Config(vips=(v,)))
    with pytest.raises(ScriptError, match="status 3"):
        await strict.down(VipContext(v, "n"))


async def test_hanging_script_is_killed_at_its_timeout(tmp_path):
    marker = tmp_path / "child-alive"
    s = script(tmp_path, "hang", f"(sleep 30; touch {marker}) & sleep 30")
    v = vip(upscript=s, script_timeout=0.3)
    prov = ScriptProvider(ProviderSpec("script"), v, Config(vips=(v,)))
    t0 = time.monotonic()
    assert await prov.run(s, VipContext(v, "n")) is None
    assert time.monotonic() - t0 < 5
    strict = ScriptProvider(ProviderSpec("script", {"fail_on_error": True}), v, Config(vips=(v,)))
    with pytest.raises(ScriptError, match="timed out"):
        await strict.up(VipContext(v, "n"))


async def test_missing_or_non_executable_script_does_not_raise(tmp_path):
    v = vip()
    prov = ScriptProvider(ProviderSpec("script"), v, Config(vips=(v,)))
    assert await prov.run(str(tmp_path / "missing"), VipContext(v, "n")) is None
    plain = tmp_path / "plain"
    plain.write_text("echo hi")
    assert await prov.run(str(plain), VipContext(v, "n")) is None


def test_unknown_option_rejected():
    v = vip()
    from vip_sidecar.providers.base import ProviderConfigError

    with pytest.raises(ProviderConfigError, match="unknown options"):
        ScriptProvider(ProviderSpec("script", {"bogus": 1}), v, Config(vips=(v,)))


async def test_bare_script_name_is_relative_to_cwd_not_path(tmp_path, monkeypatch):
    """ucarp execl()s the script: no PATH search."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    out = tmp_path / "which"
    script(bindir, "up.sh", f"echo path > {out}")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    script(workdir, "up.sh", f"echo cwd > {out}")
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
    monkeypatch.chdir(workdir)
    v = vip(upscript="up.sh")
    prov = ScriptProvider(ProviderSpec("script"), v, Config(vips=(v,)))
    assert await prov.run("up.sh", VipContext(v, "n")) == 0
    assert out.read_text().strip() == "cwd"


async def test_ipv6_vip_reaches_the_script_in_its_compressed_form(tmp_path):
    """However the operator wrote it, the script gets RFC 5952 text (what `ip -6 addr`
    prints and expects), both on promotion and on demotion."""
    from vip_sidecar.config import build_config

    out = tmp_path / "args"
    s = script(tmp_path, "updown", f'echo "$1 $2" >> {out}')
    cfg = build_config({"interface": "eth9", "srcip": "fe80::2", "vhid": 5, "pass": "pw",
                        "addr": "FD00:0000:0:0::0100", "upscript": s, "downscript": s,
                        "providers": ["script"]})
    v = cfg.vips[0]
    prov = ScriptProvider(v.providers[0], v, cfg)
    await prov.up(VipContext(v, "n"))
    await prov.down(VipContext(v, "n"))
    assert out.read_text().splitlines() == ["eth9 fd00::100", "eth9 fd00::100"]
