import pytest

from tests.unit.fakes import vip_config
from vip_sidecar import parsing
from vip_sidecar.config import Config, ProviderSpec
from vip_sidecar.providers.alias import AliasProvider
from vip_sidecar.providers.base import ProviderConfigError
from vip_sidecar.providers.script import ScriptProvider

VIP = vip_config(advskew=128)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("yes", True),
        ("ON", True),
        ("1", True),
        (False, False),
        ("off", False),
        ("0", False),
        ("no", False),
    ],
)
def test_boolean(value, expected):
    assert parsing.boolean(value) is expected


def test_boolean_rejects_words_it_does_not_know():
    with pytest.raises(ValueError, match="must be a boolean"):
        parsing.boolean("maybe")


def test_integer_c_style_and_bounds():
    p = parsing.integer(1, 255)
    assert p("0x10") == 16 and p("010") == 8 and p(7) == 7
    for bad in ("0", "256", "x", True, "08"):
        with pytest.raises(ValueError, match=r"an integer 1\.\.255"):
            p(bad)


def test_number_open_and_closed_bounds():
    closed = parsing.number(0.0, 10.0)
    assert closed(0) == 0.0 and closed("10") == 10.0
    opened = parsing.number(0.0, None, unit="seconds", lo_open=True)
    with pytest.raises(ValueError, match="a number of seconds > 0"):
        opened(0)
    with pytest.raises(ValueError):
        closed(True)


def test_option_bag_names_the_field_and_reports_leftovers():
    bag = parsing.OptionBag("demo", {"Fail-On-Error": "yes", "typo": 1}, KeyError)
    assert bag.take("fail_on_error", parsing.boolean, False) is True
    assert bag.take("absent", parsing.boolean, False) is False
    with pytest.raises(KeyError, match=r"demo: unknown options \['typo'\]"):
        bag.finish()


def test_alias_options():
    prov = AliasProvider(
        ProviderSpec("alias", {"prefix": "24", "nonlocal_bind": "true"}), VIP, Config(vips=(VIP,))
    )
    assert prov.prefix == 24 and prov.nonlocal_bind is True
    assert prov.garp_count == 2 and prov.garp_interval == pytest.approx(2 * (1 + 128 / 256))
    for opts, message in (
        ({"prefix": 33}, "alias.prefix: must be an integer 1..32"),
        ({"garp_count": "many"}, "alias.garp_count"),
        ({"bogus": 1}, "alias: unknown options"),
    ):
        with pytest.raises(ProviderConfigError, match=message):
            AliasProvider(ProviderSpec("alias", opts), VIP, Config(vips=(VIP,)))


def test_script_fail_on_error_text_false_is_false():
    prov = ScriptProvider(
        ProviderSpec("script", {"fail_on_error": "false"}), VIP, Config(vips=(VIP,))
    )
    assert prov.fail_on_error is False
