"""Config loaders and validation: one clear error per problem."""

import json
import os
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from vip_sidecar.config import ConfigError, build_config, read_passfile
from vip_sidecar.sources import ConfigRequest, assemble, load_file, parse_rc_conf

BASE = {
    "interface": "eth0",
    "srcip": "10.0.0.2",
    "vhid": "7",
    "pass": "secret",
    "addr": "10.0.0.100",
}


def test_minimal_flags_and_defaults():
    cfg = build_config(overrides=BASE)
    (vip,) = cfg.vips
    assert (vip.vhid, vip.advbase, vip.advskew, vip.deadratio) == (7, 1, 0, 3)
    assert vip.password == b"secret" and vip.addr == IPv4Address("10.0.0.100")
    assert vip.mcast == IPv4Address("224.0.0.18") and vip.garp and not vip.preempt
    assert vip.name == "vhid7" and vip.providers == ()


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("vhid", "0", "vhid: must be an integer 1..255"),
        ("vhid", "256", "vhid: must be an integer 1..255"),
        ("advskew", "300", "advskew: must be an integer 0..254"),
        ("advbase", "x", "advbase: must be an integer 0..255"),
        ("srcip", "10.0.0", "srcip: must be an IPv4 or IPv6 address"),
        ("addr", "0.0.0.0", "addr: must not be the unspecified address"),
        ("pass", "a" * 20, "pass: must be 1..19 bytes"),
        ("mcast", "10.0.0.1", "mcast: must be a multicast address"),
        ("deadratio", "0", "deadratio: must be an integer >= 1"),
        ("preempt", "maybe", "preempt: must be a boolean"),
        ("interface", "a" * 16, "interface: must be a Linux interface name"),
        ("peers", "10.0.0.2", "peers: lists only this node's own srcip"),
        ("providers", "nosuch", "unknown provider 'nosuch'"),
    ],
)
def test_invalid_values_name_the_field_and_the_accepted_values(field, value, needle):
    with pytest.raises(ConfigError) as exc:
        build_config(overrides={**BASE, field: value})
    assert needle in str(exc.value)
    assert "\n" not in str(exc.value)


def test_missing_required_fields():
    for field in ("interface", "srcip", "vhid", "addr", "pass"):
        data = {k: v for k, v in BASE.items() if k != field}
        with pytest.raises(ConfigError) as exc:
            build_config(overrides=data)
        assert exc.value.field_name == field


def test_own_srcip_is_dropped_from_a_shared_peer_list():
    cfg = build_config(overrides={**BASE, "peers": "10.0.0.1,10.0.0.2,10.0.0.3"})
    assert cfg.vips[0].peers == (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.3"))


def test_c_style_integers_like_ucarp():
    cfg = build_config(overrides={**BASE, "vhid": "0x10", "advskew": "010"})
    assert cfg.vips[0].vhid == 16 and cfg.vips[0].advskew == 8


def test_advbase_and_advskew_both_zero_rejected():
    with pytest.raises(ConfigError, match="cannot both be 0"):
        build_config(overrides={**BASE, "advbase": "0", "advskew": "0"})


def test_passfile_keeps_carriage_return_and_warns_when_world_readable(tmp_path):
    pf = tmp_path / "pw"
    pf.write_bytes(b"abc\r\nsecond line\n")
    os.chmod(pf, 0o644)
    assert read_passfile(str(pf)) == b"abc\r"
    data = {k: v for k, v in BASE.items() if k != "pass"}
    cfg = build_config(overrides={**data, "passfile": str(pf)})
    assert cfg.vips[0].password == b"abc\r"
    assert any("readable by others" in w for w in cfg.warnings)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(ConfigError, match="unexpected end of file"):
        build_config(overrides={**data, "passfile": str(empty)})


def test_env_overrides_file_and_cli_overrides_env(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({**BASE, "advskew": 10}))
    env = {"VIP_SIDECAR_ADVSKEW": "20", "VIP_SIDECAR_PEERS": "10.0.0.3, 10.0.0.4"}
    cfg = build_config(load_file(str(f)), env, {})
    assert cfg.vips[0].advskew == 20
    assert cfg.vips[0].peers == (IPv4Address("10.0.0.3"), IPv4Address("10.0.0.4"))
    cfg = build_config(load_file(str(f)), env, {"advskew": "30"})
    assert cfg.vips[0].advskew == 30


def test_env_error_names_the_variable():
    with pytest.raises(ConfigError, match="VIP_SIDECAR_VHID: must be an integer"):
        build_config(None, {"VIP_SIDECAR_VHID": "x"}, BASE)


def test_yaml_file_with_many_vips_inherits_top_level_fields(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text(
        "interface: eth0\nsrcip: 10.0.0.2\npass: s3cret\nlog_format: json\n"
        "vips:\n"
        "  - {vhid: 1, addr: 10.0.0.101, providers: [alias, {name: script, timeout: 5}]}\n"
        "  - {vhid: 2, addr: 10.0.0.102, advskew: 50, name: db, interface: eth1}\n"
    )
    cfg = build_config(load_file(str(f)))
    assert cfg.log_format == "json"
    a, b = cfg.vips
    assert (a.vhid, a.interface, a.password) == (1, "eth0", b"s3cret")
    assert [p.name for p in a.providers] == ["alias", "script"]
    assert a.providers[1].timeout == 5
    assert (b.name, b.interface, b.advskew) == ("db", "eth1", 50)


def test_file_errors_point_into_the_vips_list(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text(
        'interface = "eth0"\nsrcip = "10.0.0.2"\npass = "x"\n'
        '[[vips]]\nvhid = 1\naddr = "10.0.0.1"\n[[vips]]\nvhid = 999\naddr = "10.0.0.2"\n'
    )
    with pytest.raises(ConfigError) as exc:
        build_config(load_file(str(f)))
    assert str(exc.value).startswith("vips[1].vhid: must be an integer 1..255")


def test_duplicate_vhid_on_one_interface_rejected():
    with pytest.raises(ConfigError, match="already used"):
        build_config(
            {
                **BASE,
                "vips": [
                    {"vhid": 1, "addr": "10.0.0.5"},
                    {"vhid": 1, "addr": "10.0.0.6", "name": "x"},
                ],
            }
        )


def test_unknown_field_and_bad_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown field"):
        build_config({**BASE, "advskwe": 1})
    bad = tmp_path / "c.yaml"
    bad.write_text("vips: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid"):
        load_file(str(bad))


def test_repeated_provider_needs_distinct_ids():
    with pytest.raises(ConfigError, match="distinct 'id'"):
        build_config(overrides={**BASE, "providers": ["script", "script"]})
    cfg = build_config(
        overrides={**BASE, "providers": [{"name": "script", "id": "pre"}, "alias", "script"]}
    )
    assert [p.label for p in cfg.vips[0].providers] == ["pre", "alias", "script"]


# the rc.conf block of "FreeBSD failover in the cloud: UCARP to the rescue" (2012), verbatim
BLOG = (Path(__file__).parents[1] / "data" / "freebsd-blog-rc.conf").read_text()


def test_blog_rc_conf_block_verbatim():
    fields, flags = parse_rc_conf(BLOG)
    cfg = build_config(overrides=fields)
    vip = cfg.vips[0]
    assert (vip.interface, str(vip.srcip), vip.addr_text, vip.vhid) == (
        "vtnet1",
        "192.168.10.10",
        "192.168.10.1",
        1,
    )
    assert vip.password == b"carppass" and vip.preempt and vip.advbase == 2
    assert vip.upscript == "/usr/local/bin/ucarp_up.sh"
    assert [p.name for p in vip.providers] == ["script"]
    assert cfg.facility == "daemon" and cfg.shutdown and flags == []


def test_rc_conf_defaults_errors_and_flags():
    fields, flags = parse_rc_conf(
        "# comment\nhostname=x\nucarp_if=em0\nucarp_src='10.0.0.1'\nucarp_addr=10.0.0.9  # c\n"
        'ucarp_pass=p\nucarp_passfile=/etc/ucarp.pw\nucarp_flags="-n --mcast=239.1.1.1"\n'
    )
    assert fields["vhid"] == "1" and "pass" not in fields  # passfile wins
    assert flags == ["-n", "--mcast=239.1.1.1"]
    with pytest.raises(ConfigError, match="ucarp_src: parameter required"):
        parse_rc_conf("ucarp_if=em0\nucarp_addr=10.0.0.9\n")
    with pytest.raises(ConfigError, match=r"unknown ucarp rc\.conf variable"):
        parse_rc_conf("ucarp_if=em0\nucarp_src=1.1.1.1\nucarp_addr=1.1.1.2\nucarp_bogus=1\n")


def test_cli_password_replaces_a_passfile_from_lower_layers(tmp_path):
    pf = tmp_path / "pw"
    pf.write_text("filepw\n")
    data = {k: v for k, v in BASE.items() if k != "pass"}
    cfg = build_config({**data, "passfile": str(pf)}, {}, {"pass": "clipw"})
    assert cfg.vips[0].password == b"clipw"
    cfg = build_config({**data, "pass": "filepass"}, {"VIP_SIDECAR_PASSFILE": str(pf)}, {})
    assert cfg.vips[0].password == b"filepw"


def test_password_precedence_is_one_rule_for_every_layer(tmp_path):
    """overlay() decides it everywhere: a layer naming both means its passfile; a higher
    layer's source replaces a lower one's, a `vips` entry being the highest for its VIP."""
    pf = tmp_path / "pw"
    pf.write_text("filepw\n")
    data = {k: v for k, v in BASE.items() if k != "pass"}
    both = build_config({**data, "pass": "inline", "passfile": str(pf)})
    assert both.vips[0].password == b"filepw"
    entries = build_config(
        {**data, "passfile": str(pf), "vips": [{"pass": "entrypw"}, {"vhid": 8, "name": "b"}]}
    )
    assert [v.password for v in entries.vips] == [b"entrypw", b"filepw"]
    env_over_entry = build_config(
        {**data, "vips": [{"passfile": str(pf)}]}, {"VIP_SIDECAR_PASS": "envpw"}
    )
    assert env_over_entry.vips[0].password == b"filepw"


def test_ucarp_flags_password_replaces_the_rc_conf_passfile(tmp_path):
    pf = tmp_path / "pw"
    pf.write_text("filepw\n")
    rc = tmp_path / "rc.conf"
    rc.write_text(
        f'ucarp_if=eth0\nucarp_src=10.0.0.2\nucarp_addr=10.0.0.9\nucarp_passfile="{pf}"\n'
        'ucarp_flags="-p flagpw"\n'
    )
    cfg = assemble(ConfigRequest(rc_conf=str(rc)), {})
    assert cfg.vips[0].password == b"flagpw"
    # the real command line is above rc.conf and its ucarp_flags
    cfg = assemble(ConfigRequest(flags={"passfile": str(pf)}, rc_conf=str(rc)), {})
    assert cfg.vips[0].password == b"filepw"


def test_assemble_reads_the_file_named_by_the_environment(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**BASE, "advskew": 5}))
    cfg = assemble(ConfigRequest(flags={"advskew": "9"}), {"VIP_SIDECAR_CONFIG": str(path)})
    assert cfg.vips[0].advskew == 9 and cfg.vips[0].password == b"secret"
    with pytest.raises(ConfigError, match="from-interfaces: cannot be combined with --config"):
        assemble(ConfigRequest(interfaces_file="/x"), {"VIP_SIDECAR_CONFIG": str(path)})


def test_reload_reads_the_same_request_through_the_same_path(tmp_path, monkeypatch):
    from vip_sidecar import launch, preflight

    checked = []
    monkeypatch.setattr(preflight, "check_host", checked.append)
    path = tmp_path / "c.yaml"
    path.write_text("interface: eth0\nsrcip: 10.0.0.2\nvhid: 7\naddr: 10.0.0.100\n")
    load = launch.reloader(ConfigRequest(flags={"pass": "pw"}, config_file=str(path)), {})
    assert load()[0].vips[0].advskew == 0
    path.write_text(path.read_text() + "advskew: 40\n")
    config, providers = load()
    assert config.vips[0].advskew == 40 and config.vips[0].password == b"pw"
    assert providers == {"vhid7": []}
    # the host is checked on every reload, as at start-up
    assert [c.vips[0].advskew for c in checked] == [0, 40]


@pytest.mark.parametrize("value", ["foo", "127.0.0.1:99999", ":80", "host:"])
def test_http_address_validated(value):
    with pytest.raises(ConfigError, match="http: must be HOST:PORT"):
        build_config(overrides={**BASE, "http": value})


def test_http_address_forms_accepted():
    for value in ("0.0.0.0:9477", "[::]:9477", "node1:80", "unix:/run/vip.sock"):
        assert build_config(overrides={**BASE, "http": value}).http == value


@pytest.mark.parametrize("field", ["script_timeout", "shutdown_timeout"])
def test_nan_and_infinity_are_not_numbers(field):
    for value in ("nan", "inf"):
        with pytest.raises(ConfigError, match=field):
            build_config(overrides={**BASE, field: value})


# ------------------------------------------------------------- hardening (issue 16)
@pytest.mark.parametrize(
    "name", ["a\nb", "fake\n2026-01-01T00:00:00: [ERROR] x", "a b", "a/b", "a#b", "-web", "web-",
             "", "x" * 64, "é"]
)
def test_vip_name_must_be_a_bounded_dns_label_like_word(name):
    with pytest.raises(ConfigError) as exc:
        build_config(overrides={**BASE, "name": name})
    assert exc.value.field_name == "name"
    assert "must be 1..63 letters, digits" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_huge_vip_name_error_stays_short():
    with pytest.raises(ConfigError) as exc:
        build_config(overrides={**BASE, "name": "n" * 5_000_000})
    assert len(str(exc.value)) < 300


@pytest.mark.parametrize("name", ["web", "db-1", "vip_a.b", "X" * 63, "7"])
def test_vip_names_accepted(name):
    assert build_config(overrides={**BASE, "name": name}).vips[0].name == name


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("addr", "224.0.0.18", "addr: must be a unicast address, got the multicast"),
        ("addr", "255.255.255.255", "addr: must be a unicast address, got the broadcast"),
        ("addr", "127.0.0.5", "addr: must not be a loopback address"),
        ("addr", "240.0.0.1", "addr: must not be in the reserved 240.0.0.0/4"),
        ("addr", "10.0.0.2", "addr: the VIP 10.0.0.100 must differ"),
        ("addr", "169.254.10.1", "addr: link-local VIP 169.254.10.1"),
        ("srcip", "224.0.0.1", "srcip: must be a unicast address"),
        ("srcip", "127.0.0.1", "srcip: must not be a loopback address"),
        ("peers", "10.0.0.3,255.255.255.255", "peers: must be a unicast address"),
        ("advskew", "255", "advskew: must be an integer 0..254"),
    ],
)
def test_addresses_that_cannot_be_vips_and_advskew_255_refused(field, value, needle):
    overrides = {**BASE, field: value}
    if value == "10.0.0.2":  # addr equal to srcip: the message names the VIP as parsed
        overrides = {**BASE, "addr": "10.0.0.100", "srcip": "10.0.0.100"}
        needle = "addr: the VIP 10.0.0.100 must differ from this node's srcip 10.0.0.100"
    with pytest.raises(ConfigError) as exc:
        build_config(overrides=overrides)
    assert needle in str(exc.value)


def test_link_local_vip_accepted_next_to_a_link_local_srcip_and_advskew_254():
    cfg = build_config(
        overrides={**BASE, "srcip": "169.254.0.2", "addr": "169.254.0.100", "advskew": "254"}
    )
    assert cfg.vips[0].addr == IPv4Address("169.254.0.100") and cfg.vips[0].advskew == 254


def test_unknown_env_variables_are_ignored_with_one_warning():
    # what Kubernetes injects for a Service named vip-sidecar (service links)
    env = {
        "VIP_SIDECAR_SERVICE_HOST": "10.96.0.10",
        "VIP_SIDECAR_SERVICE_PORT": "9477",
        "VIP_SIDECAR_PORT": "tcp://10.96.0.10:9477",
        "VIP_SIDECAR_PORT_9477_TCP_PROTO": "tcp",
        "VIP_SIDECAR_ADVSKEW": "20",
    }
    cfg = build_config(None, env, BASE)
    assert cfg.vips[0].advskew == 20
    (warning,) = [w for w in cfg.warnings if "environment" in w]
    assert "VIP_SIDECAR_SERVICE_HOST" in warning and "VIP_SIDECAR_PORT_9477_TCP_PROTO" in warning


def test_yaml_syntax_error_is_one_line_with_its_place(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("interface: eth0\nvips: [unclosed\n")
    with pytest.raises(ConfigError) as exc:
        load_file(str(bad))
    assert "\n" not in str(exc.value)
    assert str(exc.value).startswith(f"config: {bad} is not valid YAML: line ")


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\x7fELF\x02\x01\x01\x00\x00", "is a binary file (NUL byte at offset 7), not text"),
     (b"interface: eth\xe90\n", "is not UTF-8 text (byte 0xe9 at offset 14)")],
)
def test_binary_or_non_utf8_config_names_the_file(tmp_path, content, needle):
    bad = tmp_path / "c.yaml"
    bad.write_bytes(content)
    with pytest.raises(ConfigError) as exc:
        load_file(str(bad))
    assert str(exc.value) == f"config: {bad} {needle}"


def test_vip_listed_as_a_peer_refused():
    with pytest.raises(ConfigError, match=r"peers: lists the VIP 10\.0\.0\.100 itself"):
        build_config(overrides={**BASE, "peers": "10.0.0.3,10.0.0.100"})


def test_script_writable_by_others_warns(tmp_path):
    script = tmp_path / "up.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o757)
    cfg = build_config(overrides={**BASE, "upscript": str(script)})
    assert f"upscript {script} is writable by others" in cfg.warnings
    script.chmod(0o755)
    assert not build_config(overrides={**BASE, "upscript": str(script)}).warnings
