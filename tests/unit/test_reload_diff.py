"""What a reload does to each VIP, decided from the old and new config alone."""

from tests.unit.fakes import vip_config
from vip_sidecar.config import Config, ProviderSpec
from vip_sidecar.reload import diff


def cfg(*vips, **globals_):
    return Config(vips=tuple(vips), **globals_)


def test_each_vip_is_kept_swapped_restarted_added_or_removed():
    web = vip_config(name="web", vhid=1, providers=(ProviderSpec("alias"),))
    db = vip_config(name="db", vhid=2)
    old_only = vip_config(name="old", vhid=3)
    other_if = vip_config(name="o", vhid=1, interface="eth1")
    old = cfg(web, db, old_only, other_if)
    new = cfg(
        web,  # unchanged
        vip_config(name="db", vhid=2, providers=(ProviderSpec("script"),), upscript="/u"),
        vip_config(name="new", vhid=4),
        vip_config(name="o", vhid=1, interface="eth1", advskew=50),
    )
    d = diff(old, new)
    assert [v.name for v in d.unchanged] == ["web"]
    assert [v.name for v in d.swapped] == ["db"]  # providers and scripts only
    assert [v.name for v in d.added] == ["new"]
    assert d.removed == [("eth0", 3)]
    assert [v.name for v in d.restarted] == ["o"]  # election settings changed
    assert d.restart_required == []


def test_identity_is_interface_and_vhid_not_the_name():
    old = cfg(vip_config(name="a", vhid=1))
    d = diff(old, cfg(vip_config(name="b", vhid=1)))
    assert [v.name for v in d.restarted] == ["b"] and not d.added and not d.removed
    d = diff(old, cfg(vip_config(name="a", vhid=9)))
    assert d.removed == [("eth0", 1)] and [v.name for v in d.added] == ["a"]


def test_start_up_only_settings_are_reported_not_applied():
    v = vip_config()
    d = diff(cfg(v, http="0.0.0.0:9477"), cfg(v, http="0.0.0.0:9999", log_format="json"))
    assert d.restart_required == ["http", "log_format"]
    assert [x.name for x in d.unchanged] == ["v"]
    # daemon-wide settings a reload does apply (read by the instances at use time)
    assert diff(cfg(v), cfg(v, provider_hold_s=5.0)).restart_required == []
