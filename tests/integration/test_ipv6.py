"""IPv6 VIPs in network namespaces (issue 12): an IPv6-only link with DAD off, the alias
provider (nodad address, unsolicited neighbour adverts), ping -6 from a third host,
a dual-stack process, hostile IPv6 adverts sent from a namespace, the daemon's own
announcements and a dual-stack pair imported from Debian interfaces (inet + inet6)."""

import hashlib
import hmac
import json
import re
import signal
import socket
import sys
import time
from ipaddress import IPv6Address

import pytest

from tests.integration.harness import NETNS, Proc, Sniffer, ping_until_reply, wait_for
from vip_sidecar import carp

pytestmark = [NETNS, pytest.mark.netns]

ALIAS = {"name": "alias", "reassert_interval": 1}
# the IPv4 test's bound (test_alias.py): dead interval of the advskew-50 backup + 1.5 s
FAILOVER_BOUND_S = 3 * (1 + 50 / 256) + 1.5


def node(topo, host, vip, *args, srcip=None, providers=(ALIAS,), name=None):
    name = name or f"n{topo.hosts.index(host) + 1}-{len(topo.procs)}"
    path = topo.workdir / f"{name}.json"
    path.write_text(json.dumps({"providers": list(providers)}))
    return topo.sidecar(host, "-p", "secret", "-v", "9", "-a", vip, "--config", str(path),
                        *args, name=name, srcip=srcip)


def neighbour_adverts(sniffer, mac, vip, after=0.0):
    """Unsolicited NAs for `vip` from `mac`: ICMPv6 136 to ff02::1, hop limit 255,
    override set, solicited clear, TLLA = mac."""
    mac_b, target = bytes.fromhex(mac.replace(":", "")), _in6(vip)
    out = []
    for ts, f in sniffer.frames():
        if ts < after or f[6:12] != mac_b or f[12:14] != b"\x86\xdd" or len(f) < 14 + 40 + 32:
            continue
        ip6, icmp = f[14:54], f[54:]
        # the kernel's own answers to h3's solicitations go to h3: not ours
        if ip6[6] != 58 or icmp[0] != 136 or icmp[8:24] != target or ip6[24:40] != ALL_NODES:
            continue
        assert ip6[7] == 255
        assert icmp[4] & 0x60 == 0x20  # O=1, S=0
        assert icmp[24:32] == b"\x02\x01" + mac_b
        out.append(ts)
    return out


def _in6(text):
    return socket.inet_pton(socket.AF_INET6, text)


ALL_NODES = _in6("ff02::1")


def test_ipv6_only_link_failover_follows_ping6_like_ipv4(make_topo):
    topo = make_topo(3, family="ipv6")
    h1, h2, h3 = topo.hosts
    vip = topo.vip6()
    sniff = Sniffer(topo, h3, 0x86DD)
    # srcip = the link-local address, the source the BSD kernels use
    a = node(topo, h1, vip, "-k", "0", srcip=h1.link_local())
    wait_for(lambda: h1.has_address(vip), 6, what="VIP on h1")
    b = node(topo, h2, vip, "-k", "50", srcip=h2.link_local())
    wait_for(lambda: b.state() == "BACKUP", 5, what="b BACKUP")
    time.sleep(1)
    # exactly one master holds the VIP
    assert (a.state(), b.state()) == ("MASTER", "BACKUP")
    assert h1.has_address(vip) and not h2.has_address(vip)
    st = a.vip()
    assert (st["family"], st["group"], st["addr"]) == ("ipv6", "ff02::12", vip)
    assert b.vip()["counters"]["adverts_received"] > 0 and not b.vip()["counters"]["drops"]
    line = next(x for x in h1.run("ip", "-o", "-6", "addr").stdout.splitlines() if vip in x)
    assert f"{vip}/128" in line and "nodad" in line and "tentative" not in line
    assert ping_until_reply(h3, vip, 3) is not None
    wait_for(lambda: neighbour_adverts(sniff, h1.mac, vip), 3, what="NA from h1")

    # kill -9 of the master, its link gone: h3's ping -6 is answered again within the bound
    t0 = time.time()
    a.signal(signal.SIGKILL)
    h1.run("ip", "link", "set", "eth0", "down")
    took = ping_until_reply(h3, vip, 10)
    assert took is not None
    print(f"\nIPv6 kill -9 -> first ping -6 reply from the new master after {took:.3f}s")
    assert took < FAILOVER_BOUND_S
    assert h2.has_address(vip)
    assert neighbour_adverts(sniff, h2.mac, vip, t0), "no neighbour advert from the new master"
    assert h2.mac in h3.run("ip", "-6", "neigh", "show", vip).stdout
    # the crashed node comes back as BACKUP: its start-up down action removes the stale VIP
    assert h1.has_address(vip)
    h1.run("ip", "link", "set", "eth0", "up")
    a = node(topo, h1, vip, "-k", "0", srcip=h1.link_local())
    wait_for(lambda: not h1.has_address(vip), 5, what="stale VIP removed by restart")
    assert a.state() == "BACKUP" and h2.has_address(vip)

    # SIGTERM of the master b: a takes over, no echo is lost on the way
    ping = Proc(h3, ["ping", "-6", "-n", "-i", "0.02", "-c", "200", vip],
                topo.workdir / "ping6.log")
    topo.procs.append(ping)
    time.sleep(1)
    t0 = time.time()
    b.signal(signal.SIGTERM)
    assert b.wait(10) == 0
    assert ping.wait(20) in (0, 1)
    summary = re.search(r"(\d+) packets transmitted, (\d+) received", ping.text())
    assert summary, ping.text()
    sent, got = int(summary.group(1)), int(summary.group(2))
    print(f"IPv6 SIGTERM handover: {got}/{sent} echoes answered")
    assert sent == got == 200
    assert h1.has_address(vip) and not h2.has_address(vip)
    # the GARP schedule: a second NA two advert intervals after the first
    wait_for(lambda: len(neighbour_adverts(sniff, h1.mac, vip, t0)) >= 2, 4, what="delayed NA")
    n1, n2 = neighbour_adverts(sniff, h1.mac, vip, t0)[:2]
    assert 1.5 < n2 - n1 < 2.6


def test_one_process_serves_an_ipv4_and_an_ipv6_vip(make_topo):
    topo = make_topo(3, family="dual")
    h1, h2, h3 = topo.hosts
    v4, v6 = topo.vip(), topo.vip6()
    nodes = []
    for host, skew in ((h1, 0), (h2, 50)):
        path = topo.workdir / f"dual-{host.ns}.json"
        alias = {**ALIAS, "nonlocal_bind": host is h2}
        path.write_text(json.dumps({
            "pass": "secret", "advskew": skew, "providers": [alias],
            "vips": [{"name": "web4", "vhid": 4, "addr": v4},
                     {"name": "web6", "vhid": 6, "addr": v6, "srcip": host.ip6}],
        }))
        nodes.append(topo.sidecar(host, "--config", str(path), name=f"dual-{host.ns}"))
    a, b = nodes
    wait_for(lambda: h1.has_address(v4) and h1.has_address(v6), 6, what="both VIPs on h1")
    # nonlocal_bind on b (BACKUP): its services can bind both VIPs before they arrive
    assert h2.run("sysctl", "-n", "net.ipv6.ip_nonlocal_bind").stdout.strip() == "1"
    assert h2.run("sysctl", "-n", "net.ipv4.ip_nonlocal_bind").stdout.strip() == "1"
    assert h2.run(sys.executable, "-c", BIND, v6, check=False).returncode == 0
    control = h3.run(sys.executable, "-c", BIND, v6, check=False)
    assert control.returncode != 0 and "Cannot assign requested address" in control.stderr
    wait_for(lambda: b.state(0) == "BACKUP" and b.state(1) == "BACKUP", 5, what="b BACKUP")
    assert [v["family"] for v in a.status()["vips"]] == ["ipv4", "ipv6"]
    assert not h2.has_address(v4) and not h2.has_address(v6)
    assert ping_until_reply(h3, v4, 3) is not None and ping_until_reply(h3, v6, 3) is not None

    a.signal(signal.SIGKILL)
    h1.run("ip", "link", "set", "eth0", "down")
    t0 = time.time()
    took4 = ping_until_reply(h3, v4, 10)
    took6 = ping_until_reply(h3, v6, 10)
    assert took4 is not None and took6 is not None
    print(f"\ndual-stack kill -9: IPv4 answered after {took4:.3f}s, IPv6 {time.time() - t0:.3f}s")
    assert time.time() - t0 < FAILOVER_BOUND_S
    assert h2.has_address(v4) and h2.has_address(v6)
    assert [v["state"] for v in b.status()["vips"]] == ["MASTER", "MASTER"]
    # re-assert: the IPv6 VIP deleted by hand is back within reassert_interval (1 s)
    h2.run("ip", "-6", "addr", "del", f"{v6}/128", "dev", "eth0")
    wait_for(lambda: h2.has_address(v6), 3, what="IPv6 VIP re-asserted")
    assert ping_until_reply(h3, v6, 3) is not None


BIND = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
socket.socket(fam, socket.SOCK_STREAM).bind((sys.argv[1], 8080))
"""


def test_ipv6_unicast_peers_without_multicast(make_topo):
    topo = make_topo(3, family="ipv6")
    h1, h2, h3 = topo.hosts
    vip = topo.vip6()
    # the bridge drops every IPv6 advert to a group (neighbour discovery still passes)
    topo.hub_run("nft", "add", "table", "bridge", "v6mc")
    topo.hub_run("nft", "add", "chain", "bridge", "v6mc", "v6fwd",
                 "{ type filter hook forward priority 0; }")
    topo.hub_run("nft", "add", "rule", "bridge", "v6mc", "v6fwd", "ip6", "nexthdr", "112",
                 "ip6", "daddr", "ff00::/8", "drop")
    peers = ("--peer", f"{h1.ip},{h2.ip}")  # one shared list: each node drops its own
    a = node(topo, h1, vip, "-k", "0", *peers)
    wait_for(lambda: h1.has_address(vip), 6, what="VIP on h1")
    b = node(topo, h2, vip, "-k", "50", *peers)
    wait_for(lambda: b.state() == "BACKUP", 5, what="b BACKUP")
    time.sleep(1.5)
    st = b.vip()
    assert (st["mode"], st["peers"]) == ("unicast", [h1.ip])
    assert st["counters"]["adverts_received"] > 0 and not st["counters"]["drops"]
    assert a.state() == "MASTER" and not h2.has_address(vip)
    # h3 talks to the VIP before the kill, as in the other failover tests: a ping that
    # first resolves the VIP after the kill meets nobody for up to the dead interval,
    # and ping -w gives up once neighbour discovery fails (3 s)
    assert ping_until_reply(h3, vip, 3) is not None
    a.signal(signal.SIGKILL)
    h1.run("ip", "link", "set", "eth0", "down")  # or its leftover VIP would answer
    took = ping_until_reply(h3, vip, 10)
    assert took is not None and took < FAILOVER_BOUND_S
    print(f"\nIPv6 unicast kill -9 -> first ping -6 reply after {took:.3f}s")
    assert b.state() == "MASTER"


SENDER = """
import socket, struct, sys
ifindex = socket.if_nametoindex("eth0")
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, int(sys.argv[2]))
s.sendto(bytes.fromhex(sys.argv[1]), ("ff02::12", 0, 0, ifindex))
"""


def advert(vip, password=b"secret", vhid=9, advskew=0, counter=77):
    digest = carp.Authenticator(password, vhid, IPv6Address(vip)).digest(counter)
    return carp.encode_carp(vhid, 1, advskew, counter, digest)


def test_hostile_ipv6_adverts_are_counted_drops_and_never_change_state(make_topo):
    topo = make_topo(2, family="ipv6")
    h1, h2 = topo.hosts
    vip = topo.vip6()
    a = node(topo, h1, vip, "-k", "100")
    wait_for(lambda: a.state() == "MASTER", 6, what="h1 MASTER")

    def send(payload, hops=255):
        h2.run(sys.executable, "-c", SENDER, payload.hex(), str(hops))

    bad_sum = bytearray(advert(vip))
    bad_sum[6] ^= 0x5A
    # each would make h1 step down (advskew 0 beats its 100) if it were accepted
    hostile = {
        "bad_ttl": [(advert(vip), 64), (advert(vip), 1)],
        "bad_checksum": [(bytes(bad_sum), 255)],
        "bad_digest": [(advert(vip, password=b"wrong"), 255)],
        "bogus_size": [(advert(vip)[:20], 255), (b"", 255)],
    }
    for packets in hostile.values():
        for payload, hops in packets:
            send(payload, hops)
    time.sleep(0.5)
    st = a.status()
    counters = st["vips"][0]["counters"]
    drops = {**counters["drops"], **{k.split("/")[1]: v for k, v in st["interface_drops"].items()}}
    for reason, packets in hostile.items():
        assert drops.get(reason) == len(packets), (reason, drops)
    assert counters["adverts_received"] == 0
    assert a.state() == "MASTER" and h1.has_address(vip)
    assert [t[1] for t in a.transitions()] == ["BACKUP", "MASTER"]

    # control: the same advert, valid, does move it (the test can fail)
    send(advert(vip))
    wait_for(lambda: a.state() == "BACKUP", 3, what="h1 yields to the valid advert")
    assert a.vip()["counters"]["adverts_received"] == 1


SOCKET_PROBE = """
import socket
from ipaddress import IPv6Address
from vip_sidecar.transport6 import Inet6Socket
rx = Inet6Socket("lo", socket.if_nametoindex("lo"), 4096)
assert rx.sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM) == -1  # never set
tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW, 112)
for hops in (255, 7):
    tx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, hops)
    tx.sendto(bytes(36), ("::1", 0))
got = rx.receive(10)
print([(r.hop_limit, str(r.src), str(r.dst), len(r.data)) for r in got])
for _ in range(400):  # the small receive buffer overflows: the kernel drops, we count
    tx.sendto(bytes(36), ("::1", 0))
n = len(rx.receive(1000))
# the count rides on the next packet queued after the drops (skb dropcount)
tx.sendto(bytes(36), ("::1", 0))
n += len(rx.receive(10))
print(n, rx.take_kernel_drops() + n == 401, rx.take_kernel_drops())
"""


def test_the_ipv6_socket_reads_hop_limit_destination_and_counts_kernel_drops(make_topo):
    topo = make_topo(1, family="ipv6")
    res = topo.hosts[0].run(sys.executable, "-c", SOCKET_PROBE, check=False)
    assert res.returncode == 0, res.stderr
    first, second = res.stdout.strip().splitlines()
    assert first == "[(255, '::1', '::1', 36), (7, '::1', '::1', 36)]"
    n, counted, again = second.split()
    # some were read, every other one is counted as a kernel drop, once
    assert 0 < int(n) < 400 and counted == "True" and again == "0"


def test_without_a_provider_the_daemon_announces_both_families_itself(make_topo):
    # no alias provider: the speaker sends the GARP (IPv4) and the NA (IPv6) through
    # announce.py, the sender the alias provider uses too
    from tests.integration.test_alias import garps_from

    topo = make_topo(2, family="dual")
    h1, h2 = topo.hosts
    v4, v6 = topo.vip(), topo.vip6()
    arp, nd = Sniffer(topo, h2, 0x0806), Sniffer(topo, h2, 0x86DD)
    path = topo.workdir / "bare.json"
    path.write_text(json.dumps({
        "pass": "secret", "providers": [],
        "vips": [{"name": "web4", "vhid": 4, "addr": v4},
                 {"name": "web6", "vhid": 6, "addr": v6, "srcip": h1.ip6}],
    }))
    a = topo.sidecar(h1, "--config", str(path), name="bare")
    wait_for(lambda: a.state(0) == "MASTER" and a.state(1) == "MASTER", 8, what="a MASTER")
    wait_for(lambda: garps_from(arp, h1.mac, v4, 0), 3, what="GARP for the IPv4 VIP")
    wait_for(lambda: neighbour_adverts(nd, h1.mac, v6), 3, what="NA for the IPv6 VIP")
    # nothing added the addresses: the announcements came from the daemon itself
    assert not h1.has_address(v4) and not h1.has_address(v6)


INTERFACES = """\
iface eth0 inet static
    address {ip}/16
    ucarp-vid 4
    ucarp-vip {v4}
    ucarp-password secret
    ucarp-advskew {skew}
iface eth0 inet6 static
    address {ip6}/64
    ucarp-vid 6
    ucarp-vip {v6}
    ucarp-password secret
    ucarp-advskew {skew}
iface eth0:ucarp inet static
    address {v4}
    netmask 255.255.0.0
iface eth0:ucarp inet6 static
    address {v6}
    netmask 64
"""


def test_debian_interfaces_with_an_inet6_stanza_runs_a_dual_stack_pair(make_topo):
    # --from-interfaces: the inet6 stanza is an IPv6 VIP with its /64 from eth0:ucarp
    topo = make_topo(2, family="dual")
    h1, h2 = topo.hosts
    v4, v6 = topo.vip(), topo.vip6()

    def start(host, skew):
        path = topo.workdir / f"interfaces-{host.ns}"
        path.write_text(INTERFACES.format(ip=host.ip, ip6=host.ip6, v4=v4, v6=v6, skew=skew))
        return topo.sidecar(host, "--from-interfaces", str(path), name=f"deb-{host.ns}")

    # h2 starts once h1 is master: without preempt, whichever is up first keeps the VIPs
    a = start(h1, 0)
    wait_for(lambda: h1.has_address(v4) and h1.has_address(v6), 8, what="both VIPs on h1")
    b = start(h2, 50)
    wait_for(lambda: b.state(0) == "BACKUP" and b.state(1) == "BACKUP", 8, what="b BACKUP")
    assert [(v["name"], v["family"], v["group"]) for v in a.status()["vips"]] == [
        ("eth0-ucarp", "ipv4", "224.0.0.18"), ("eth0-ucarp6", "ipv6", "ff02::12")
    ]
    assert f"{v6}/64" in h1.run("ip", "-o", "-6", "addr", "show", "dev", "eth0").stdout
    assert not h2.has_address(v4) and not h2.has_address(v6)
    time.sleep(1)
    for v in b.status()["vips"]:
        assert v["counters"]["adverts_received"] > 0 and not v["counters"]["drops"], v


def carp_frames(sniffer):
    """IPv6 frames with next header 112 (the sniffer keeps every 0x86dd frame)."""
    return [f for _, f in sniffer.frames() if len(f) >= 54 and f[20] == 112]


@pytest.mark.parametrize("mode", ["multicast", "unicast"])
def test_ipv6_adverts_on_the_wire_are_what_the_bsd_kernels_send(make_topo, mode):
    # read off h2's wire: the framing comes from the kernel and our socket options
    topo = make_topo(2, family="ipv6")
    h1, h2 = topo.hosts
    vip = topo.vip6()
    sniff = Sniffer(topo, h2, 0x86DD)
    if mode == "multicast":
        src, dst, dst_mac = h1.link_local(), "ff02::12", "333300000012"
        a = node(topo, h1, vip, srcip=src, providers=())
    else:
        src, dst, dst_mac = h1.ip, h2.ip, h2.mac.replace(":", "")
        a = node(topo, h1, vip, "--peer", h2.ip, providers=())
    wait_for(lambda: a.state() == "MASTER", 8, what="h1 MASTER")
    frames = wait_for(lambda: carp_frames(sniff)[:3] if len(carp_frames(sniff)) >= 3 else None,
                      5, what="three adverts on h2's wire")
    for f in frames:
        assert (f[0:6].hex(), f[6:12].hex()) == (dst_mac, h1.mac.replace(":", ""))
        ip6, carp_hdr = f[14:54], f[54:]
        assert ip6[0] >> 4 == 6 and ((ip6[0] & 0x0F) << 4 | ip6[1] >> 4) == 56 << 2  # DSCP 56
        assert int.from_bytes(ip6[4:6], "big") == len(carp_hdr) == 36  # no padding, no ext
        assert (ip6[6], ip6[7]) == (112, 255)  # next header, hop limit (unicast too)
        assert ip6[8:24] == _in6(src) and ip6[24:40] == _in6(dst)
        # the plain sum of the 36 bytes, no pseudo-header (IPV6_CHECKSUM never set)
        assert carp.internet_checksum(carp_hdr) == 0
        assert carp_hdr[0] == 0x21 and carp_hdr[1] == 9  # version 2 advert, vhid 9
        message = bytes([2, 1, 9]) + _in6(vip) + carp_hdr[8:16]
        assert hmac.new(b"secret", message, hashlib.sha1).digest() == carp_hdr[16:36]
