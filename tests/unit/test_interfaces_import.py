"""--from-interfaces: Debian's ucarp stanzas, checked against the package's own README
example and its if-up.d hook (run with a recorder in place of /usr/sbin/ucarp, so the
flags the hook would give ucarp are compared with what the import makes of the file)."""

import argparse
import os
import subprocess
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from vip_sidecar import interfaces_import, sources
from vip_sidecar.cli import build_parser, config_request, normalise_argv
from vip_sidecar.config import ConfigError

README = Path("/usr/share/doc/ucarp/README.Debian")
HOOK = Path("/etc/network/if-up.d/ucarp")
needs_package = pytest.mark.skipif(
    not (README.exists() and HOOK.exists()), reason="needs Debian's ucarp package"
)


def readme_example() -> str:
    """The interfaces example of README.Debian, exactly as shipped."""
    text = README.read_text()
    start = text.index("For example:") + len("For example:")
    end = text.index("In the above example")
    return text[start:end].strip("\n") + "\n"


def config_from(path, *extra, env=None):
    ns = build_parser().parse_args(normalise_argv(["run", "--from-interfaces", str(path), *extra]))
    return sources.assemble(config_request(ns), env or {})


def hook_argv(tmp_path, stanza_options, iface):
    """What Debian's if-up.d/ucarp runs for one stanza, with ifupdown's IF_* variables."""
    recorder = tmp_path / "record-ucarp"
    out = tmp_path / f"argv-{iface}"
    recorder.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {out}\n')
    recorder.chmod(0o755)
    hook = tmp_path / "hook"
    hook.write_text(HOOK.read_text().replace("UCARP=/usr/sbin/ucarp", f"UCARP={recorder}"))
    env = {"PATH": os.environ["PATH"], "IFACE": iface, "MODE": "start", "PHASE": "post-up"}
    for key, value in stanza_options.items():
        env["IF_" + key.upper().replace("-", "_")] = value
    subprocess.run(["sh", str(hook)], env=env, check=True, timeout=10)
    return out.read_text().splitlines()


COMPARED = (
    "interface srcip vhid password addr advbase advskew deadratio preempt nomcast xparam"
).split()


def assert_same_as_hook(tmp_path, path, index=0):
    stanzas = [s for s in interfaces_import.parse(path) if "ucarp-vid" in s.options]
    st = stanzas[index]
    argv = hook_argv(tmp_path, st.options, st.name)
    ours = config_from(path).vips[index]
    hook_ns = build_parser().parse_args(["run", *argv])
    ucarp_like = sources.assemble(config_request(hook_ns), {}).vips[0]
    for name in COMPARED:
        assert getattr(ours, name) == getattr(ucarp_like, name), name
    return ours, argv


@needs_package
def test_readme_debian_example_runs_as_the_hook_would_run_ucarp(tmp_path):
    path = tmp_path / "interfaces"
    path.write_text(readme_example())
    vip, argv = assert_same_as_hook(tmp_path, path)
    assert argv[:4] == ["-i", "eth0", "-s", "10.0.0.2"]
    assert (vip.vhid, vip.addr, vip.password) == (3, IPv4Address("10.0.0.1"), b"16charsatmost")
    assert vip.preempt is True and vip.advskew == 0 and vip.advbase == 1
    # the default vip-up/vip-down bring up `eth0:ucarp`: address 10.0.0.1 netmask /32
    assert [(p.name, dict(p.options)) for p in vip.providers] == [("alias", {"prefix": 32})]
    assert vip.upscript is None and vip.downscript is None


MAIN = """\
# The loopback network interface
auto lo
iface lo inet loopback

auto eth0
iface eth0 inet static
    address 192.168.10.2
    netmask 255.255.255.0
    gateway 192.168.10.1
    ucarp-vid 10
    ucarp-vip 192.168.10.100
    ucarp-password s3cret
    ucarp-advskew 20
    ucarp-master no
iface eth0:ucarp inet static
    address 192.168.10.100
    netmask 255.255.255.0

source-directory interfaces.d
source extra/*.cfg
"""
# tab-indented, with a continuation line
ETH1 = (
    "auto eth1\n"
    "iface eth1 inet static\n"
    "\taddress 172.16.0.2\n"
    "\tnetmask 255.255.0.0\n"
    "\tucarp-vid 0x11\n"
    "\tucarp-vip 172.16.0.50\n"
    "\tucarp-password \\\n"
    "\t  longer-pass\n"
    "\tucarp-advbase 2\n"
    "\tucarp-deadratio 4\n"
    "\tucarp-nomcast yes\n"
    "iface eth1:ucarp inet static\n"
    "\taddress 172.16.0.50/16\n"
    "\tup echo hook-not-run\n"
)
ETH2 = """\
iface eth2 inet static
  address 10.9.0.2
  netmask 24
  ucarp-vid 200
  ucarp-vip 10.9.0.9
  ucarp-password pw
  ucarp-upscript /etc/ucarp/up.sh
  ucarp-downscript /etc/ucarp/down.sh
  ucarp-xparam extra
  ucarp-master 1
"""


@pytest.fixture
def multi(tmp_path):
    (tmp_path / "interfaces").write_text(MAIN)
    (tmp_path / "interfaces.d").mkdir()
    (tmp_path / "interfaces.d" / "eth1").write_text(ETH1)
    # source-directory skips names ifupdown skips (editor backups, dpkg leftovers)
    (tmp_path / "interfaces.d" / "eth1.dpkg-old").write_text(ETH2.replace("200", "201"))
    (tmp_path / "extra").mkdir()
    (tmp_path / "extra" / "eth2.cfg").write_text(ETH2)
    return tmp_path / "interfaces"


def test_multi_interface_file_with_sources(multi):
    config = config_from(multi, "--status-socket", "/run/x.sock")
    assert config.status_socket == "/run/x.sock"  # later layers still apply
    by_if = {v.interface: v for v in config.vips}
    assert sorted(by_if) == ["eth0", "eth1", "eth2"]
    eth0, eth1, eth2 = by_if["eth0"], by_if["eth1"], by_if["eth2"]
    assert eth0.srcip == IPv4Address("192.168.10.2") and eth0.advskew == 20
    assert eth0.preempt is False
    assert [dict(p.options) for p in eth0.providers] == [{"prefix": 24}]
    assert (eth1.vhid, eth1.password, eth1.advbase, eth1.deadratio) == (17, b"longer-pass", 2, 4)
    assert eth1.nomcast is True and [dict(p.options) for p in eth1.providers] == [{"prefix": 16}]
    assert any("1 pre-up/up/down line(s) are not run" in w for w in config.warnings)
    assert eth2.preempt is True and eth2.xparam == "extra"
    assert (eth2.upscript, eth2.downscript) == ("/etc/ucarp/up.sh", "/etc/ucarp/down.sh")
    assert [p.name for p in eth2.providers] == ["script"]
    assert eth2.name == "eth2-ucarp"


@needs_package
@pytest.mark.parametrize("index", [0, 1, 2])
def test_multi_interface_file_matches_the_hook(tmp_path, multi, index):
    assert_same_as_hook(tmp_path, multi, index)


@pytest.mark.parametrize(
    ("stanza", "field", "message"),
    [
        ("ucarp-vid 300", "(eth0) ucarp-vid", "must be an integer 1..255, got '300'"),
        ("ucarp-vip 10.0.0.500", "(eth0) ucarp-vip", "must be an IPv4 or IPv6 address"),
        (
            "ucarp-pasword x",
            "(eth0) ucarp-pasword",
            "unknown ucarp option; accepted: ucarp-advbase",
        ),
        ("ucarp-advskew many", "(eth0) ucarp-advskew", "must be an integer 0..254"),
    ],
)
def test_bad_values_name_the_interfaces_option(tmp_path, stanza, field, message):
    path = tmp_path / "interfaces"
    key = stanza.split()[0]
    base = "iface eth0 inet static\n address 10.0.0.2\n ucarp-vid 3\n ucarp-vip 10.0.0.1\n"
    base += " ucarp-password pw\n"
    lines = [ln for ln in base.splitlines() if not ln.strip().startswith(key + " ")]
    path.write_text("\n".join([*lines, " " + stanza]) + "\n")
    with pytest.raises(ConfigError) as err:
        config_from(path)
    assert f"{path}:1 {field}: {message}" in str(err.value)


def test_missing_required_and_mismatched_alias_stanza(tmp_path):
    path = tmp_path / "interfaces"
    path.write_text(
        "iface eth0 inet static\n address 10.0.0.2\n ucarp-vid 3\n ucarp-vip 10.0.0.1\n"
    )
    with pytest.raises(ConfigError, match="ucarp-password: required for ucarp to start"):
        config_from(path)
    path.write_text("iface eth0 inet dhcp\n ucarp-vid 3\n ucarp-vip 10.0.0.1\n ucarp-password p\n")
    with pytest.raises(ConfigError, match=r"\(eth0\) address: ucarp needs this interface's static"):
        config_from(path)
    path.write_text(
        "iface eth0 inet static\n address 10.0.0.2\n ucarp-vid 3\n ucarp-vip 10.0.0.1\n"
        " ucarp-password p\niface eth0:ucarp inet static\n address 10.0.0.7\n"
    )
    with pytest.raises(ConfigError, match=r"10\.0\.0\.7 differs from ucarp-vip 10\.0\.0\.1"):
        config_from(path)
    path.write_text("auto lo\niface lo inet loopback\n")
    with pytest.raises(ConfigError, match=r"no iface stanza .* has ucarp-\* options"):
        config_from(path)


def test_source_loops_and_unreadable_files_are_one_line_errors(tmp_path):
    path = tmp_path / "interfaces"
    path.write_text("source interfaces\n")
    with pytest.raises(ConfigError, match="source loop"):
        config_from(path)
    with pytest.raises(ConfigError, match=r"cannot read .*nosuch"):
        config_from(tmp_path / "nosuch")
    with pytest.raises(ConfigError, match="cannot be combined with --config"):
        config_from(path, "--config", str(path))


def test_hook_flag_semantics_follow_expr():
    # `expr "$V" : "no\|off\|false\|0"` matches at the start only
    assert [interfaces_import._hook_flag(v) for v in ("yes", "1", "true", "maybe")] == [True] * 4
    assert [interfaces_import._hook_flag(v) for v in ("no", "off", "false", "0", "none", "")] == [
        False
    ] * 6


def test_cli_flag_is_listed():
    parser = build_parser()
    ns = parser.parse_args(["run", "--from-interfaces", "/etc/network/interfaces"])
    assert isinstance(ns, argparse.Namespace) and ns.interfaces_file == "/etc/network/interfaces"


def test_non_utf8_interfaces_file_names_the_file(tmp_path):
    f = tmp_path / "interfaces"
    f.write_bytes(b"iface eth0 inet static\n    ucarp-vid 3\xff\n")
    with pytest.raises(ConfigError) as exc:
        interfaces_import.parse(f)
    assert str(exc.value) == f"from-interfaces: {f} is not UTF-8 text (byte 0xff at offset 38)"
