"""IPv6 VIPs in the config: the same fields as IPv4, one family per VIP entry."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from vip_sidecar import cli, flags
from vip_sidecar.config import ConfigError, build_config
from vip_sidecar.inet import DEFAULT_GROUP6

V6 = {"interface": "eth0", "srcip": "fe80::2", "vhid": "7", "pass": "secret",
      "addr": "fd00::100"}


def test_ipv6_vip_from_flags_gets_the_bsd_group_and_says_its_family():
    argv = ["-i", "eth0", "-s", "fe80::2", "-v", "7", "-p", "secret", "-a", "FD00:0:0::0100"]
    ns = cli.build_parser().parse_args(cli.normalise_argv(argv))
    (vip,) = build_config(flags=flags.options_to_fields(ns)).vips
    assert vip.addr == IPv6Address("fd00::100") and vip.srcip == IPv6Address("fe80::2")
    assert vip.mcast == DEFAULT_GROUP6 == IPv6Address("ff02::12")
    assert vip.family == "ipv6"
    # scripts get the compressed form, whatever the operator typed
    assert vip.addr_text == "fd00::100"


def test_ipv4_vip_keeps_its_text_and_group():
    (vip,) = build_config(overrides={**V6, "srcip": "10.0.0.2", "addr": "10.0.0.100"}).vips
    assert vip.family == "ipv4" and vip.mcast == IPv4Address("224.0.0.18")


def test_ipv6_from_environment_and_peers_and_group():
    env = {"VIP_SIDECAR_" + k.upper(): v for k, v in V6.items()}
    env["VIP_SIDECAR_PEERS"] = "2001:db8::1, 2001:db8::2 fe80::2"
    env["VIP_SIDECAR_SRCIP"] = "2001:db8::2"
    env["VIP_SIDECAR_MCAST"] = "ff05::12"
    (vip,) = build_config(env=env).vips
    # the node's own srcip is dropped from a shared peer list, as for IPv4
    assert vip.peers == (IPv6Address("2001:db8::1"), IPv6Address("fe80::2"))
    assert vip.mcast == IPv6Address("ff05::12")


def test_dual_stack_is_two_vips_in_one_file():
    data = {"interface": "eth0", "pass": "secret",
            "vips": [{"vhid": 1, "srcip": "10.0.0.2", "addr": "10.0.0.100"},
                     {"vhid": 2, "srcip": "fe80::2", "addr": "fd00::100"}]}
    v4, v6 = build_config(file_data=data).vips
    assert (v4.family, v6.family) == ("ipv4", "ipv6")
    assert (str(v4.mcast), str(v6.mcast)) == ("224.0.0.18", "ff02::12")


def test_one_vhid_cannot_hold_both_families():
    data = {"interface": "eth0", "pass": "secret",
            "vips": [{"vhid": 1, "srcip": "10.0.0.2", "addr": "10.0.0.100"},
                     {"vhid": 1, "srcip": "fe80::2", "addr": "fd00::100"}]}
    with pytest.raises(ConfigError, match=r"vips\[1\].vhid: vhid 1 on eth0 is already used"):
        build_config(file_data=data)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("srcip", "10.0.0.2",
         "srcip: 10.0.0.2 is ipv4 but the VIP fd00::100 is ipv6: one address family per VIP "
         "entry (dual-stack: two VIPs with two vhids)"),
        ("mcast", "224.0.0.18", "mcast: 224.0.0.18 is ipv4 but the VIP fd00::100 is ipv6"),
        ("peers", "2001:db8::1 10.0.0.3", "peers: 10.0.0.3 is ipv4 but the VIP fd00::100"),
        ("nomcast", "yes", "nomcast: IPv6 has no broadcast"),
        ("addr", "ff02::1", "addr: must be a unicast address"),
        ("addr", "::", "addr: must not be the unspecified address"),
        ("addr", "::1", "addr: must not be a loopback address"),
        ("addr", "::ffff:10.0.0.1", "addr: must not be an IPv4-mapped address; write 10.0.0.1"),
        ("addr", "fd00::100%eth0", "addr: an IPv6 zone ('%eth0') is not accepted (the "
         "interface is its own field); write fd00::100"),
        ("srcip", "fd00::100", "addr: the VIP fd00::100 must differ from this node's srcip"),
        ("peers", "fd00::100", "peers: lists the VIP fd00::100 itself"),
        ("mcast", "ff01::12", "mcast: must have at least link-local scope"),
        ("mcast", "fd00::12", "mcast: must be a multicast address"),
    ],
)
def test_family_and_address_mistakes_are_one_line(field, value, message):
    with pytest.raises(ConfigError) as exc:
        build_config(overrides={**V6, field: value})
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_ipv4_vip_with_an_ipv6_srcip_is_refused_too():
    with pytest.raises(ConfigError, match=r"srcip: fe80::2 is ipv6 but the VIP 10\.0\.0\.100"):
        build_config(overrides={**V6, "addr": "10.0.0.100"})


def test_link_local_ipv6_vip_is_allowed_with_any_srcip():
    # every IPv6 interface has a link-local address: the IPv4 169.254/16 rule has no use
    (vip,) = build_config(overrides={**V6, "srcip": "2001:db8::2", "addr": "fe80::100"}).vips
    assert vip.addr == IPv6Address("fe80::100")


def test_an_ipv6_srcip_not_on_the_interface_is_refused_in_one_line(capsys):
    rc = cli.main(["-i", "lo", "-s", "fd00::2", "-v", "3", "-p", "pw", "-a", "fd00::9"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    # only addresses of the srcip's family are listed
    assert err.strip() == (
        "vip-sidecar: config error: srcip: fd00::2 is not an address of lo (it has ::1)"
    )

