"""Option validation of the aws provider: bad options fail at start-up, one line each."""

import pytest

from vip_sidecar.config import build_config
from vip_sidecar.providers.aws import create
from vip_sidecar.providers.aws.options import parse_options
from vip_sidecar.providers.base import ProviderConfigError


def opts(timeout: float = 30.0, **raw):
    return parse_options(raw, timeout)


def test_minimal_options_per_mode_and_defaults():
    o = opts(mode="secondary-ip")
    assert o.retry_mode == "standard" and o.max_attempts == 3
    assert (o.connect_timeout, o.read_timeout, o.verify_timeout) == (2.0, 4.0, 20.0)
    assert o.drift_confirm == 3.0 and o.emulator_compat is False
    assert o.reassert_interval == 15.0 and o.tag_prefix == "vip-sidecar/" and o.needs_imds
    assert opts(mode="eip", allocation_id="eipalloc-0123456789abcdef0").allocation_id
    o = opts(mode="route", route_table_ids="rtb-0123456789abcdef0, rtb-0123456789abcdef1")
    assert o.route_table_ids == ("rtb-0123456789abcdef0", "rtb-0123456789abcdef1")
    assert opts(mode="route", route_table_id=["rtb-01234567"]).route_table_ids == ("rtb-01234567",)


def test_every_override_is_parsed():
    o = opts(mode="EIP", region="eu-west-1", instance_id="i-0123456789abcdef0",
             eni_id="eni-0123456789abcdef0", mac="0A-1B-2C-3D-4E-5F", private_ip="10.0.0.5",
             public_ip="198.51.100.7", endpoint_url="http://10.0.0.254:5000/",
             imds_endpoint="http://[fd00:ec2::254]", retry_mode="adaptive", max_attempts="2",
             connect_timeout=1, read_timeout="4", verify_timeout=10, reassert_interval="off",
             tag_prefix="corp:vip/", fencing="no", verify_imds=False, drift_confirm=2,
             emulator_compat="yes")
    assert o.mode == "eip" and o.mac == "0a:1b:2c:3d:4e:5f" and not o.needs_imds
    assert o.endpoint_url == "http://10.0.0.254:5000" and o.reassert_interval is None
    assert o.max_attempts == 2 and o.fencing is False and o.verify_imds is False
    assert o.drift_confirm == 2 and o.emulator_compat is True


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({}, "option mode is required"),
        ({"mode": "vip"}, "must be one of secondary-ip, eip, route"),
        ({"mode": "eip", "colour": "red"}, "unknown options ['colour']"),
        ({"mode": "route"}, "needs route_table_ids"),
        ({"mode": "route", "route_table_ids": "rtb-x"}, "must look like rtb-"),
        ({"mode": "route", "route_table_ids": []}, "at least one id"),
        ({"mode": "route", "route_table_ids": ["rtb-01234567", "rtb-01234567"]}, "twice"),
        ({"mode": "secondary-ip", "eni_id": "eni_123"}, "must look like eni-"),
        ({"mode": "secondary-ip", "region": "Europe"}, "AWS region name"),
        ({"mode": "secondary-ip", "allocation_id": "eipalloc-01234567"}, "only used in mode eip"),
        ({"mode": "eip", "route_table_ids": ["rtb-01234567"]}, "only used in mode route"),
        ({"mode": "eip", "allocation_id": "eipalloc-01234567", "public_ip": "198.51.100.1"},
         "either allocation_id or public_ip"),
        ({"mode": "eip", "endpoint_url": "ec2.amazonaws.com"}, "http(s) URL"),
        ({"mode": "eip", "max_attempts": 0}, "integer 1..10"),
        ({"mode": "eip", "max_attempts": True}, "integer 1..10"),
        ({"mode": "eip", "retry_mode": "aggressive"}, "standard, adaptive, legacy"),
        ({"mode": "eip", "read_timeout": -1}, "seconds"),
        ({"mode": "eip", "verify_timeout": 30}, "below the provider timeout"),
        ({"mode": "eip", "verify_timeout": 5, "read_timeout": 5}, "must not exceed verify"),
        ({"mode": "eip", "tag_prefix": "aws:x"}, "not starting with aws:"),
        ({"mode": "eip", "tag_prefix": "bad#"}, "letters, digits"),
        ({"mode": "eip", "mac": "zz"}, "MAC address"),
        ({"mode": "eip", "fencing": "maybe"}, "boolean"),
    ],
)
def test_bad_options_name_the_option(raw, needle):
    with pytest.raises(ProviderConfigError, match=r"^aws[ .:]") as exc:
        parse_options(raw, 30.0)
    assert needle in str(exc.value)


def test_create_validates_and_takes_the_reassert_interval():
    cfg = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 1, "pass": "x",
                        "addr": "10.0.0.100",
                        "providers": [{"name": "aws", "mode": "secondary-ip",
                                       "reassert_interval": 7, "timeout": 25}]})
    p = create(cfg.vips[0].providers[0], cfg.vips[0], cfg)
    assert p.reassert_interval == 7 and p.timeout == 25
    bad = build_config({"interface": "eth0", "srcip": "10.0.0.1", "vhid": 1, "pass": "x",
                        "addr": "10.0.0.100", "providers": [{"name": "aws", "mode": "x"}]})
    with pytest.raises(ProviderConfigError):
        create(bad.vips[0].providers[0], bad.vips[0], bad)
