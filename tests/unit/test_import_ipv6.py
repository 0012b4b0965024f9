"""IPv6 through the ucarp importers: Debian's `iface ... inet6` stanzas (--from-interfaces)
and FreeBSD's rc.conf (--from-rc-conf) give IPv6 VIPs with the BSD group, and what the
source cannot say is refused in one line naming the source's own option."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from tests.unit.test_cli import one_error_line
from tests.unit.test_interfaces_import import assert_same_as_hook, config_from, needs_package
from vip_sidecar import cli, sources
from vip_sidecar.config import ConfigError

INET6 = """\
auto eth0
iface eth0 inet6 static
    address 2001:db8::2
    netmask 64
    ucarp-vid 6
    ucarp-vip 2001:DB8:0::10
    ucarp-password s3cret
    ucarp-advskew 30
    ucarp-master yes
"""
INET6_ALIAS = "iface eth0:ucarp inet6 static\n    address 2001:db8::10/64\n"
# one interface, one VIP per family: two stanzas, two vhids, two alias stanzas
DUAL = """\
iface eth0 inet static
    address 192.0.2.2/24
    ucarp-vid 4
    ucarp-vip 192.0.2.100
    ucarp-password pw
iface eth0 inet6 static
    address fe80::2/64
    ucarp-vid 6
    ucarp-vip fd00::100
    ucarp-password pw
iface eth0:ucarp inet static
    address 192.0.2.100
    netmask 255.255.255.0
iface eth0:ucarp inet6 static
    address fd00::100
    netmask 56
"""


def write(tmp_path, text):
    path = tmp_path / "interfaces"
    path.write_text(text)
    return path


def test_inet6_stanza_is_an_ipv6_vip_with_the_bsd_group(tmp_path):
    config = config_from(write(tmp_path, INET6 + INET6_ALIAS))
    (vip,) = config.vips
    assert (vip.family, vip.srcip, vip.addr) == (
        "ipv6", IPv6Address("2001:db8::2"), IPv6Address("2001:db8::10")
    )
    assert vip.mcast == IPv6Address("ff02::12") and vip.peers == ()
    assert vip.addr_text == "2001:db8::10"  # compressed for scripts, as typed otherwise
    assert (vip.vhid, vip.password, vip.advskew, vip.preempt) == (6, b"s3cret", 30, True)
    # the alias stanza's address is the VIP however it is spelled; its /64 is the prefix
    assert vip.name == "eth0-ucarp6"
    assert [(p.name, dict(p.options)) for p in vip.providers] == [("alias", {"prefix": 64})]
    assert config.warnings == ()


def test_inet6_without_an_alias_stanza_adds_a_host_route(tmp_path):
    config = config_from(write(tmp_path, INET6))
    assert [dict(p.options) for p in config.vips[0].providers] == [{"prefix": 128}]
    (warning,) = config.warnings
    assert "no 'iface eth0:ucarp inet6' stanza" in warning and "2001:DB8:0::10/128" in warning


@needs_package
def test_inet6_stanza_matches_what_the_debian_hook_would_run(tmp_path):
    # the hook passes the stanza's address as -s whatever its family
    vip, argv = assert_same_as_hook(tmp_path, write(tmp_path, INET6 + INET6_ALIAS))
    assert argv[:4] == ["-i", "eth0", "-s", "2001:db8::2"] and vip.family == "ipv6"


def test_dual_stack_interface_is_two_vips_each_with_its_family(tmp_path):
    config = config_from(write(tmp_path, DUAL))
    v4, v6 = config.vips
    assert (v4.name, v4.family, v4.vhid, v4.srcip, v4.mcast) == (
        "eth0-ucarp", "ipv4", 4, IPv4Address("192.0.2.2"), IPv4Address("224.0.0.18")
    )
    assert (v6.name, v6.family, v6.vhid, v6.srcip, v6.mcast) == (
        "eth0-ucarp6", "ipv6", 6, IPv6Address("fe80::2"), IPv6Address("ff02::12")
    )
    # each VIP takes the :ucarp stanza of its own family
    assert [dict(p.options) for p in v4.providers] == [{"prefix": 24}]
    assert [dict(p.options) for p in v6.providers] == [{"prefix": 56}]


def test_check_prints_each_imported_vips_family_and_group(tmp_path, capsys):
    cli.main(["check", "--from-interfaces", str(write(tmp_path, DUAL))])
    heads = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("[")]
    assert heads == [
        "[eth0-ucarp] vhid 4 ipv4 addr 192.0.2.100 on eth0, adverts from 192.0.2.2 to "
        "group 224.0.0.18",
        "[eth0-ucarp6] vhid 6 ipv6 addr fd00::100 on eth0, adverts from fe80::2 to "
        "group ff02::12",
    ]


@pytest.mark.parametrize(
    ("edit", "field", "message"),
    [
        (("ucarp-vip 2001:DB8:0::10", "ucarp-vip 192.0.2.10"), "(eth0) ucarp-vip",
         "192.0.2.10 is IPv4 but this is an inet6 stanza (its address 2001:db8::2 is the "
         "advert source): move the ucarp-* lines to an 'iface eth0 inet' stanza"),
        (("inet6 static\n    address 2001:db8::2", "inet static\n    address 192.0.2.2"),
         "(eth0) ucarp-vip", "2001:db8::10 is IPv6 but this is an inet stanza (its address "
         "192.0.2.2 is the advert source): move the ucarp-* lines to an 'iface eth0 inet6' "
         "stanza"),
        (("address 2001:db8::2", "address 192.0.2.2"), "(eth0) address",
         "must be an IPv6 address in an inet6 stanza, got '192.0.2.2'"),
        (("address 2001:db8::2", "address fe80::2%eth0"), "(eth0) address",
         "must be an IPv6 address in an inet6 stanza, got 'fe80::2%eth0'"),
        (("ucarp-master yes", "ucarp-nomcast yes"), "(eth0) ucarp-nomcast",
         "IPv6 has no broadcast: drop it (adverts go to ff02::12)"),
        (("inet6 static", "ipx static"), "(eth0)",
         "ucarp-* options in an ipx stanza; they belong in an inet or inet6 stanza"),
    ],
)
def test_what_a_stanza_cannot_say_is_one_line_naming_the_option(tmp_path, edit, field, message):
    path = write(tmp_path, INET6.replace(*edit))
    with pytest.raises(ConfigError) as err:
        config_from(path)
    assert str(err.value) == f"{path}:2 {field}: {message}"


def test_one_vhid_per_family_and_inet6_netmask_is_a_prefix_length(tmp_path):
    path = write(tmp_path, DUAL.replace("ucarp-vid 6", "ucarp-vid 4"))
    with pytest.raises(ConfigError) as err:
        config_from(path)
    assert str(err.value) == (
        f"{path}:6 (eth0) ucarp-vid: vhid 4 on eth0 is already used by {path}:1 (eth0): "
        "one vhid per VIP (dual-stack: one for each family)"
    )
    path = write(tmp_path, DUAL.replace("netmask 56", "netmask ffff:ff00::"))
    with pytest.raises(ConfigError) as err:
        config_from(path)
    assert str(err.value) == (
        f"{path}:14 (eth0:ucarp) netmask: must be a prefix length, got 'ffff:ff00::'"
    )
    path = write(tmp_path, DUAL.replace("address fd00::100\n", "address fd00::101\n"))
    with pytest.raises(ConfigError, match=r"fd00::101 differs from ucarp-vip fd00::100"):
        config_from(path)


RC6 = 'ucarp_if="lo"\nucarp_src="fe80::2"\nucarp_addr="2001:db8::10"\nucarp_pass="x"\n'


def rc_config(tmp_path, text, *flags):
    rc = tmp_path / "rc.conf"
    rc.write_text(text)
    ns = cli.build_parser().parse_args(["run", "--from-rc-conf", str(rc), *flags])
    return sources.assemble(cli.config_request(ns), {})


def test_rc_conf_ipv6_vip_with_the_bsd_group_and_ucarp_flags(tmp_path):
    (vip,) = rc_config(tmp_path, RC6).vips
    assert (vip.family, vip.srcip, vip.addr, vip.mcast, vip.vhid) == (
        "ipv6", IPv6Address("fe80::2"), IPv6Address("2001:db8::10"), IPv6Address("ff02::12"), 1
    )
    # ucarp_flags carry the rest, IPv6 too: unicast peers, another group
    (vip,) = rc_config(tmp_path, RC6 + 'ucarp_flags="--peer fd00::3 -m ff02::1:12"').vips
    assert vip.peers == (IPv6Address("fd00::3"),) and vip.mcast == IPv6Address("ff02::1:12")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (RC6.replace("fe80::2", "10.0.0.2"),
         "srcip: 10.0.0.2 is ipv4 but the VIP 2001:db8::10 is ipv6: one address family per "
         "VIP entry (dual-stack: two VIPs with two vhids)"),
        # FreeBSD spells link-locals with their zone; the interface is ucarp_if
        (RC6.replace("fe80::2", "fe80::2%em0"),
         "srcip: an IPv6 zone ('%em0') is not accepted (the interface is its own field); "
         "write fe80::2"),
        (RC6 + 'ucarp_flags="-M"\n',
         "nomcast: IPv6 has no broadcast: use multicast (default ff02::12) or --peer for "
         "unicast"),
    ],
)
def test_rc_conf_ipv6_mistakes_are_one_line(tmp_path, capsys, text, message):
    rc = tmp_path / "rc.conf"
    rc.write_text(text)
    err = one_error_line(capsys, ["run", "--from-rc-conf", str(rc)])
    assert err == f"vip-sidecar: config error: {message}"
