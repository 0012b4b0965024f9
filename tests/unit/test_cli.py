"""The command line: ucarp flags, exit codes, check, status formatting."""

import argparse

import pytest

from vip_sidecar import cli, flags, sources
from vip_sidecar.status_client import format_table


def parse(*args):
    return cli.build_parser().parse_args(cli.normalise_argv(list(args)))


def test_every_ucarp_short_option_is_accepted():
    ns = parse(
        "-i",
        "eth0",
        "-s",
        "10.0.0.2",
        "-v",
        "3",
        "-p",
        "pw",
        "-P",
        "-n",
        "-a",
        "10.0.0.9",
        "-b",
        "2",
        "-k",
        "40",
        "-u",
        "/up",
        "-d",
        "/down",
        "-r",
        "4",
        "-D",
        "-z",
        "-S",
        "-M",
        "-f",
        "local0",
        "-x",
        "extra arg",
    )
    assert ns.command == "run"
    fields = flags.options_to_fields(ns)
    assert fields == {
        "interface": "eth0",
        "srcip": "10.0.0.2",
        "vhid": "3",
        "pass": "pw",
        "preempt": True,
        "neutral": True,
        "addr": "10.0.0.9",
        "advbase": "2",
        "advskew": "40",
        "upscript": "/up",
        "downscript": "/down",
        "deadratio": "4",
        "debug": True,
        "shutdown": True,
        "ignoreifstate": True,
        "nomcast": True,
        "facility": "local0",
        "xparam": "extra arg",
    }


def test_long_options_abbreviations_and_later_password_wins():
    ns = parse(
        "run",
        "--interface=eth0",
        "--srcip",
        "10.0.0.2",
        "--vhid",
        "3",
        "--passfile",
        "/x",
        "--pass",
        "late",
        "--addr",
        "10.0.0.9",
        "--mcast",
        "239.1.1.1",
        "--peer",
        "10.0.0.3",
        "--peer",
        "10.0.0.4,10.0.0.5",
        "--preem",
    )
    f = flags.options_to_fields(ns)
    assert f["pass"] == "late" and "passfile" not in f
    assert f["mcast"] == "239.1.1.1" and f["preempt"] is True
    assert f["peers"] == ["10.0.0.3", "10.0.0.4", "10.0.0.5"]


def test_invalid_config_is_one_line_and_exit_2(capsys):
    rc = cli.main(["-i", "lo", "-s", "10.0.0.2", "-v", "300", "-p", "pw", "-a", "10.0.0.9"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err == "vip-sidecar: config error: vhid: must be an integer 1..255, got '300'"


def test_bad_provider_options_exit_2(capsys):
    rc = cli.main(
        [
            "run",
            "-i",
            "lo",
            "-s",
            "10.0.0.2",
            "-v",
            "3",
            "-p",
            "pw",
            "-a",
            "10.0.0.9",
            "--provider",
            "alias",
            "--config",
            "/nonexistent.yaml",
        ]
    )
    assert rc == 2
    assert "cannot read /nonexistent.yaml" in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("run", "--bogus")
    assert exc.value.code == 2


def test_version(capsys):
    assert cli.main(["version"]) == 0
    assert capsys.readouterr().out.startswith("vip-sidecar ")


def test_rc_conf_flags_merge(tmp_path):
    rc = tmp_path / "rc.conf"
    rc.write_text(
        'ucarp_if="lo"\nucarp_src="10.0.0.2"\nucarp_addr="10.0.0.9"\n'
        'ucarp_pass="x"\nucarp_flags="-n -k 30"\n'
    )
    ns = parse("run", "--from-rc-conf", str(rc), "-k", "40")
    cfg = sources.assemble(cli.config_request(ns), {})
    assert cfg.vips[0].neutral and cfg.vips[0].advskew == 40


def test_check_reports_interface_problems(capsys):
    rc = cli.main(
        ["check", "-i", "nonexistent0", "-s", "10.0.0.2", "-v", "3", "-p", "pw", "-a", "10.0.0.9"]
    )
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL interface nonexistent0" in out


def test_status_table():
    table = format_table(
        {
            "node": "n1",
            "healthy": True,
            "ready": True,
            "vips": [
                {
                    "name": "web",
                    "vhid": 7,
                    "interface": "eth0",
                    "addr": "10.0.0.9",
                    "state": "MASTER",
                    "since": 0,
                    "last_reason": "preempt",
                    "master_seen": {"src": "10.0.0.3", "advbase": 1, "advskew": 50},
                    "counters": {"adverts_sent": 5, "adverts_received": 2, "drops": {"bad_ttl": 4}},
                }
            ],
        }
    )
    lines = table.splitlines()
    assert lines[0].split() == [
        "VIP",
        "VHID",
        "IFACE",
        "ADDR",
        "STATE",
        "SINCE",
        "REASON",
        "MASTER",
        "SEEN",
        "SENT",
        "RECV",
        "DROPS",
    ]
    assert lines[1].split()[:5] == ["web", "7", "eth0", "10.0.0.9", "MASTER"]
    assert lines[1].split()[-3:] == ["5", "2", "4"]


def test_namespace_type():
    assert isinstance(parse("version"), argparse.Namespace)


# ------------------------------------------------------------- hardening (issue 16)
def one_error_line(capsys, argv):
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.count("\n") == 1, err
    return err.strip()


def test_bad_ucarp_flags_in_rc_conf_is_one_line_naming_the_file(tmp_path, capsys):
    rc = tmp_path / "rc.conf"
    rc.write_text('ucarp_if="lo"\nucarp_src="10.0.0.2"\nucarp_addr="10.0.0.9"\n'
                  'ucarp_pass="x"\nucarp_flags="-n --bogus"\n')
    err = one_error_line(capsys, ["run", "--from-rc-conf", str(rc)])
    assert err.startswith(f"vip-sidecar: config error: {rc}: ucarp_flags: unrecognized arguments")


def test_non_utf8_rc_conf_names_the_file(tmp_path, capsys):
    rc = tmp_path / "rc.conf"
    rc.write_bytes(b'ucarp_if="l\xff"\n')
    err = one_error_line(capsys, ["run", "--from-rc-conf", str(rc)])
    assert err == f"vip-sidecar: config error: from-rc-conf: {rc} is not UTF-8 text " \
                  "(byte 0xff at offset 11)"


def test_yaml_syntax_error_via_the_cli_is_one_line(tmp_path, capsys):
    bad = tmp_path / "c.yaml"
    bad.write_text("vips:\n  - {vhid: 1\n  addr: [\n")
    err = one_error_line(capsys, ["run", "--config", str(bad)])
    assert "config: " in err and str(bad) in err


def test_command_line_mistake_is_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "--bogus"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unrecognized arguments: --bogus" in err


def test_missing_interface_is_one_line_naming_the_field(capsys):
    err = one_error_line(
        capsys, ["-i", "nosuch0", "-s", "10.0.0.2", "-v", "3", "-p", "pw", "-a", "10.0.0.9"]
    )
    assert err.startswith("vip-sidecar: config error: interface: no interface named nosuch0 (")


def test_srcip_not_on_the_interface_is_refused_like_ucarp(capsys):
    err = one_error_line(
        capsys, ["-i", "lo", "-s", "10.0.0.2", "-v", "3", "-p", "pw", "-a", "10.0.0.9"]
    )
    assert err == (
        "vip-sidecar: config error: srcip: 10.0.0.2 is not an address of lo (it has 127.0.0.1)"
    )


def test_check_reports_a_foreign_srcip(capsys):
    rc = cli.main(["check", "-i", "lo", "-s", "10.0.0.2", "-v", "3", "-p", "pw", "-a", "10.0.0.9"])
    out = capsys.readouterr().out
    assert rc == 1 and "FAIL srcip: 10.0.0.2 is not an address of lo" in out


def test_ctl_quotes_names_and_errors_are_one_line(tmp_path, capsys):
    # no daemon: the names must still make a valid request, and the failure one line
    for name in ("a b", "a/b", "a#b", "x?y"):
        rc = cli.main(["ctl", "demote", "--vip", name, "--socket", str(tmp_path / "none.sock")])
        err = capsys.readouterr().err
        assert rc == 1 and err.count("\n") == 1, err
        assert err.startswith(f"vip-sidecar ctl: cannot connect to {tmp_path}/none.sock: No such")
