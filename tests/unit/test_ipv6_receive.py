"""One process, one IPv4 and one IPv6 VIP: the IPv6 receive checks count their drops
under the IPv4 reasons, never move the state, and IPv6 adverts leave as bare headers."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from tests.unit.fakes import FakeTransport, started_runtime
from vip_sidecar import carp
from vip_sidecar.config import build_config
from vip_sidecar.metrics import render
from vip_sidecar.transport6 import Received6

GROUP6 = IPv6Address("ff02::12")
PEER = IPv6Address("fe80::1")
OWN = IPv6Address("fe80::2")


def advert(vhid=2, password=b"secret", vip="fd00::100", advskew=0, counter=5) -> bytes:
    digest = carp.Authenticator(password, vhid, IPv6Address(vip)).digest(counter)
    return carp.encode_carp(vhid, 1, advskew, counter, digest)


@pytest.fixture
def rt():
    cfg = build_config({
        "interface": "ds0", "pass": "secret",
        "vips": [{"vhid": 1, "srcip": "10.98.0.2", "addr": "10.98.0.100"},
                 {"vhid": 2, "srcip": str(OWN), "addr": "fd00::100"}],
    })
    with started_runtime(cfg) as runtime:
        yield runtime


def feed(rt, payload, src=PEER, dst=GROUP6, hop_limit=255):
    return rt.dispatch_decoded("ds0", Received6(payload, src, dst, hop_limit).decode())


def test_status_and_metrics_say_the_family_of_each_vip(rt):
    v4, v6 = rt.status()["vips"]
    assert (v4["family"], v4["group"]) == ("ipv4", "224.0.0.18")
    assert (v6["family"], v6["group"], v6["addr"]) == ("ipv6", "ff02::12", "fd00::100")
    text = render(rt).decode()
    assert 'vip_sidecar_vip_info{addr="fd00::100",family="ipv6",interface="ds0",vhid="2"' in text


def bad_checksum() -> bytes:
    raw = bytearray(advert())
    raw[6] ^= 0xFF
    return bytes(raw)


@pytest.mark.parametrize(
    ("payload", "kwargs", "reason"),
    [
        (advert(), {"hop_limit": 64}, "bad_ttl"),
        (advert(), {"hop_limit": 1}, "bad_ttl"),
        (bad_checksum(), {}, "bad_checksum"),
        (advert(password=b"wrong"), {}, "bad_digest"),
        (advert(vip="fd00::101"), {}, "bad_digest"),
        (advert()[:35], {}, "bogus_size"),
        (advert(), {"dst": IPv6Address("ff02::13")}, "wrong_group"),
        (advert(), {"src": OWN}, "own_packet"),
    ],
)
def test_hostile_ipv6_adverts_are_counted_drops_and_never_change_state(rt, payload, kwargs, reason):
    inst = rt.instances[1]
    before = (inst.election.state, inst.stats.adverts_received, inst.speaker.master_seen)
    result = feed(rt, payload, **kwargs)
    assert result is not None and result.value == reason
    counted = inst.stats.drops[reason] + sum(
        n for (i, r), n in rt.iface_drops.items() if r == reason
    )
    assert counted == 1
    assert (inst.election.state, inst.stats.adverts_received, inst.speaker.master_seen) == before
    # the IPv4 VIP heard nothing either
    assert rt.instances[0].stats.adverts_received == 0 and not rt.instances[0].stats.drops


def test_an_advert_of_the_other_family_never_reaches_that_vhids_election(rt):
    """One dispatch path picks the VIP by vhid alone: an advert framed in the other
    family, even with that VIP's own valid digest, is a wrong_group drop."""
    v4, v6 = rt.instances
    before = [(i.election.state, i.stats.adverts_received, i.speaker.master_seen)
              for i in rt.instances]
    digest4 = carp.Authenticator(b"secret", 1, IPv4Address("10.98.0.100")).digest(5)
    as_ipv6 = carp.encode_carp(1, 1, 0, 5, digest4)  # vhid 1 is the IPv4 VIP
    assert feed(rt, as_ipv6) is carp.DropReason.WRONG_GROUP
    # vhid 2 (the IPv6 VIP) with its valid IPv6 digest, in an IPv4 packet to 224.0.0.18
    as_ipv4 = carp.encode_ip(advert(), IPv4Address("10.98.0.3"), IPv4Address("224.0.0.18"), 1)
    assert rt.dispatch("ds0", as_ipv4) is carp.DropReason.WRONG_GROUP
    assert v4.stats.drops["wrong_group"] == 1 and v6.stats.drops["wrong_group"] == 1
    assert [(i.election.state, i.stats.adverts_received, i.speaker.master_seen)
            for i in rt.instances] == before
    # control: the same digests in their own family are accepted
    ok4 = carp.encode_ip(as_ipv6, IPv4Address("10.98.0.3"), IPv4Address("224.0.0.18"), 2)
    assert rt.dispatch("ds0", ok4) is None and feed(rt, advert()) is None
    assert v4.stats.adverts_received == 1 and v6.stats.adverts_received == 1


def test_a_valid_ipv6_advert_is_accepted_and_its_counter_followed(rt):
    inst = rt.instances[1]
    assert feed(rt, advert(counter=41)) is None
    assert inst.stats.adverts_received == 1
    assert inst.speaker.master_seen is not None and inst.speaker.master_seen.src == str(PEER)
    assert inst.speaker.counter.next() == 42  # continues the master's sequence, like ucarp


def test_ipv6_advert_goes_out_as_the_bare_header_to_the_group(rt):
    inst = rt.instances[1]
    transport = rt.transports["ds0"]
    transport.sent.clear()
    inst.send_advert(1, 0)
    ((where, payload),) = transport.sent
    assert where == "ipv6:ff02::12" and len(payload) == carp.CARP_LEN
    assert carp.internet_checksum(payload) == 0
    pkt = Received6(payload, OWN, GROUP6, 255).decode()
    assert isinstance(pkt, carp.Packet)
    assert inst.speaker.auth.digest(pkt.adv.counter) == pkt.adv.digest


def test_without_an_announcing_provider_the_daemon_sends_the_neighbour_advert(rt):
    # the speaker hands its VIP to the transport's announce (announce.py picks the NA
    # for IPv6, the GARP for IPv4: tests/unit/test_announce.py)
    rt.instances[1].speaker.send_garp()
    assert rt.transports["ds0"].sent[-1] == ("announce", IPv6Address("fd00::100").packed)
    rt.instances[0].speaker.send_garp()
    assert rt.transports["ds0"].sent[-1] == ("announce", rt.instances[0].cfg.addr.packed)


def test_replay_protection_is_the_ipv4_guard_keyed_by_the_ipv6_source():
    from tests.unit.fakes import FakeClock
    from vip_sidecar.speaker import Speaker
    from vip_sidecar.stats import VipStats

    (cfg,) = build_config({"interface": "ds0", "pass": "secret", "vhid": 2, "srcip": str(OWN),
                           "addr": "fd00::100", "replay_protection": True}).vips
    stats = VipStats()
    transport = FakeTransport("ds0")
    speaker = Speaker(cfg, transport, stats, FakeClock())
    transport.close()  # receiving never touches it
    first = Received6(advert(counter=100), PEER, GROUP6, 255).decode()
    assert speaker.receive(first) is None
    assert speaker.receive(first) is carp.DropReason.REPLAY  # the same packet again
    older = Received6(advert(counter=99), PEER, GROUP6, 255).decode()
    assert speaker.receive(older) is carp.DropReason.REPLAY
    # another source has a counter of its own
    other = Received6(advert(counter=1), IPv6Address("fe80::9"), GROUP6, 255).decode()
    assert speaker.receive(other) is None
    assert stats.drops["replay"] == 2 and stats.adverts_received == 2


UNICAST_OWN, UNICAST_PEER = IPv6Address("2001:db8::2"), IPv6Address("2001:db8::3")


@pytest.fixture
def unicast():
    cfg = build_config({"interface": "uc0", "pass": "secret", "vhid": 2, "addr": "fd00::100",
                        "srcip": str(UNICAST_OWN), "peers": [str(UNICAST_PEER)]})
    with started_runtime(cfg) as runtime:
        yield runtime


@pytest.mark.parametrize(
    ("payload", "src", "dst", "hops", "reason"),
    [
        # the hop limit is not checked in unicast mode (routed peers): the source list,
        # the destination and the HMAC still stand between a stranger and the election
        (advert(), IPv6Address("2001:db8::66"), UNICAST_OWN, 255, "not_a_peer"),
        (advert(), IPv6Address("2001:db8::66"), UNICAST_OWN, 1, "not_a_peer"),
        (advert(), UNICAST_PEER, IPv6Address("2001:db8::9"), 64, "wrong_group"),
        (advert(password=b"wrong"), UNICAST_PEER, UNICAST_OWN, 1, "bad_digest"),
        (bad_checksum(), UNICAST_PEER, UNICAST_OWN, 64, "bad_checksum"),
    ],
)
def test_ipv6_unicast_mode_relaxes_the_hop_limit_and_nothing_else(
    unicast, payload, src, dst, hops, reason
):
    (inst,) = unicast.instances
    before = (inst.election.state, inst.stats.adverts_received, inst.speaker.master_seen)
    got = unicast.dispatch_decoded("uc0", Received6(payload, src, dst, hops).decode())
    assert got is not None and got.value == reason and inst.stats.drops[reason] == 1
    assert (inst.election.state, inst.stats.adverts_received, inst.speaker.master_seen) == before


def test_ipv6_unicast_accepts_a_routed_peer_advert(unicast):
    # FreeBSD 14's unicast carpaddr6: any hop limit, as long as everything else holds
    (inst,) = unicast.instances
    pkt = Received6(advert(), UNICAST_PEER, UNICAST_OWN, 61).decode()
    assert unicast.dispatch_decoded("uc0", pkt) is None
    assert inst.stats.adverts_received == 1 and inst.speaker.master_seen.src == str(UNICAST_PEER)
