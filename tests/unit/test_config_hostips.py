"""srcip as a dual-stack node's address list (Kubernetes' status.hostIPs, the chart's
srcipFromHostIP): each VIP takes the address of its own family."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from vip_sidecar.config import ConfigError, build_config

VIPS = [{"vhid": 1, "addr": "10.0.0.100"}, {"vhid": 2, "addr": "fd00::100"}]


def test_each_vip_takes_the_address_of_its_family_from_the_environment():
    cfg = build_config({"interface": "eth0", "pass": "pw", "vips": VIPS},
                       env={"VIP_SIDECAR_SRCIP": "10.0.0.5,fd00::5"})
    assert [v.srcip for v in cfg.vips] == [IPv4Address("10.0.0.5"), IPv6Address("fd00::5")]


def test_a_single_stack_list_still_works_for_its_family():
    cfg = build_config({"interface": "eth0", "pass": "pw", "srcip": "fd00::5,",
                        "vhid": 2, "addr": "fd00::100"})
    assert cfg.vips[0].srcip == IPv6Address("fd00::5")


@pytest.mark.parametrize(
    ("srcip", "message"),
    [
        ("10.0.0.5", "srcip: 10.0.0.5 is ipv4 but the VIP fd00::100 is ipv6"),
        ("10.0.0.5,10.0.0.6", "VIP_SIDECAR_SRCIP: lists two addresses of one family"),
        ("10.0.0.5,fd00::x", "VIP_SIDECAR_SRCIP:"),
    ],
)
def test_bad_lists_fail_in_one_line_naming_the_field(srcip, message):
    with pytest.raises(ConfigError) as exc:
        build_config({"interface": "eth0", "pass": "pw", "vips": VIPS},
                     env={"VIP_SIDECAR_SRCIP": srcip})
    assert message in str(exc.value) and "\n" not in str(exc.value)

