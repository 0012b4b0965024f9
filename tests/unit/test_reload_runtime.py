"""Reload applied to an in-process Runtime (fake transports): which instances survive,
which interfaces open and close, and that a rejected reload changes nothing."""

import pytest

from tests.unit.fakes import FakeTransport
from vip_sidecar.config import ConfigError, build_config
from vip_sidecar.reload import Reloader, ReloadRejected
from vip_sidecar.runtime import Runtime

BASE = {"srcip": "10.99.0.2", "pass": "pw", "http": "127.0.0.1:9477"}


def config(*vips, **top):
    return build_config({**BASE, **top, "vips": list(vips)})


def vip(name, vhid, interface="rl0", **extra):
    return {"name": name, "vhid": vhid, "interface": interface,
            "addr": f"10.99.0.{100 + vhid}", **extra}  # fmt: skip


@pytest.fixture
async def runtime():
    opened = []

    def factory(ifname):
        if ifname == "broken0":
            raise OSError(19, "No such device")
        opened.append(ifname)
        return FakeTransport(ifname)

    rt = Runtime(
        config(vip("keep", 1), vip("skew", 2), vip("gone", 3, interface="old0")),
        {},
        transport_factory=factory,
        handle_signals=False,
    )
    await rt.start()
    rt.opened = opened
    yield rt
    await rt.shutdown()


async def test_instances_kept_restarted_added_and_interfaces_opened_and_closed(runtime):
    rt = runtime
    keep = next(i for i in rt.instances if i.cfg.name == "keep")
    skew = next(i for i in rt.instances if i.cfg.name == "skew")
    new = config(vip("keep", 1), vip("skew", 2, advskew=50), vip("fresh", 4, interface="new0"),
                 http="127.0.0.1:9999")  # fmt: skip
    reloader = Reloader(rt, lambda: (new, {}))
    result = await reloader.reload()
    assert result["unchanged"] == ["keep"] and result["restarted"] == ["skew"]
    assert result["added"] == ["fresh"] and result["removed"] == ["gone"]
    assert result["restart_required"] == ["http"]
    by_name = {i.cfg.name: i for i in rt.instances}
    assert by_name["keep"] is keep  # the very same instance: state and timers untouched
    assert by_name["skew"] is not skew and by_name["skew"].election.params.advskew == 50
    assert sorted(rt.transports) == ["new0", "rl0"]  # old0 closed with its last VIP
    assert rt.opened == ["rl0", "old0", "new0"]
    assert rt.config.http == "127.0.0.1:9477"  # start-up-only: the running value is kept
    assert ("new0", 4) in rt._by_vhid and ("old0", 3) not in rt._by_vhid
    assert reloader.last == result


async def test_rejected_reloads_change_nothing(runtime):
    rt = runtime
    before = (rt.config, list(rt.instances), dict(rt.transports))

    def bad_config():
        raise ConfigError("vips[1].vhid", "must be an integer 1..255, got '300'")

    with pytest.raises(ReloadRejected, match=r"vips\[1\]\.vhid: must be an integer"):
        await Reloader(rt, bad_config).reload()
    unopenable = config(vip("keep", 1), vip("x", 9, interface="broken0"))
    with pytest.raises(ReloadRejected, match=r"interface: .*No such device"):
        await Reloader(rt, lambda: (unopenable, {})).reload()
    assert (rt.config, list(rt.instances), dict(rt.transports)) == before


async def test_a_reload_adds_an_ipv6_vip_and_moves_another_to_ipv6(runtime):
    rt = runtime
    v6 = {"srcip": "fe80::2"}
    new = config(vip("keep", 1), vip("skew", 2, addr="fd00::102", **v6),
                 vip("gone", 3, interface="old0"), vip("six", 6, addr="fd00::106", **v6))
    result = await Reloader(rt, lambda: (new, {})).reload()
    assert result["unchanged"] == ["keep", "gone"]
    assert result["restarted"] == ["skew"] and result["added"] == ["six"]
    by_name = {i.cfg.name: i for i in rt.instances}
    assert [by_name[n].cfg.family for n in ("keep", "skew", "six")] == ["ipv4", "ipv6", "ipv6"]
    transport = rt.transports["rl0"]
    assert [str(g) for g in transport.joined[-2:]] == ["ff02::12"] * 2  # skew, six
    by_name["six"].send_advert(1, 0)
    assert transport.sent[-1][0] == "ipv6:ff02::12"
    assert rt._by_vhid[("rl0", 6)] is by_name["six"]
    assert {str(a) for a in rt._own_src["rl0"]} == {"10.99.0.2", "fe80::2"}


async def test_a_reload_to_ipv6_on_an_interface_without_ipv6_changes_nothing(runtime):
    rt = runtime
    rt.transports["rl0"].ipv6 = False
    before = (rt.config, list(rt.instances), dict(rt.transports))
    new = config(vip("keep", 1), vip("skew", 2), vip("six", 6, addr="fd00::106", srcip="fe80::2"))
    with pytest.raises(ReloadRejected) as exc:
        await Reloader(rt, lambda: (new, {})).reload()
    assert str(exc.value) == "interface: interface rl0: no IPv6 socket: not supported"
    assert (rt.config, list(rt.instances), dict(rt.transports)) == before
