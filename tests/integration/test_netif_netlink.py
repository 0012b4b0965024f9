"""vip_sidecar.netif's raw netlink address add/delete/dump (the alias provider's only way to
touch addresses) against a real kernel, inside a namespace."""

import sys

import pytest

from tests.integration.harness import NETNS, Topology

pytestmark = [NETNS, pytest.mark.netns]

SCRIPT = """
import socket, sys
from ipaddress import ip_address
from vip_sidecar import netif
idx = socket.if_nametoindex("eth0")
vip = ip_address("{vip}")
out = []
out.append(netif.change_address("add", idx, vip, {plen}))
out.append(netif.change_address("add", idx, vip, {plen}))
out.append("{vip}" in netif.address_table()[idx])
out.append(netif.change_address("del", idx, vip, {plen}))
out.append(netif.change_address("del", idx, vip, {plen}))
out.append("{vip}" in netif.address_table().get(idx, ()))
try:
    netif.change_address("add", 999999, vip, {plen})
except OSError as exc:
    out.append(exc.errno)
print(out)
"""


SCRIPT_ADD = """
import socket
from ipaddress import ip_address
from vip_sidecar import netif
print(netif.change_address("add", socket.if_nametoindex("eth0"), ip_address("{vip}"), {plen}))
"""


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_add_delete_dump_are_idempotent_and_match_ip(family):
    topo = Topology(1)
    try:
        h = topo.hosts[0]
        # DAD on: the IPv6 VIP must be usable at once anyway (added nodad)
        vip, plen = (topo.vip(), 32) if family == "ipv4" else ("fd00:77::100", 128)
        script = SCRIPT.format(vip=vip, plen=plen)
        res = h.run(sys.executable, "-c", script, check=False)
        assert res.returncode == 0, res.stderr
        # added, already there, seen; removed, already gone, not seen; bad index refused
        assert res.stdout.strip() == "[True, False, True, True, False, False, 19]", res.stdout
        shown = h.run("ip", "-o", "addr", "show", "dev", "eth0").stdout
        assert vip not in shown
        if family == "ipv6":
            # added again and left: `ip` shows it without "tentative" (nodad)
            add = SCRIPT_ADD.format(vip=vip, plen=plen)
            assert h.run(sys.executable, "-c", add).stdout.strip() == "True"
            line = next(x for x in h.run("ip", "-o", "-6", "addr", "show", "dev", "eth0")
                        .stdout.splitlines() if vip in x)
            assert "nodad" in line and "tentative" not in line, line
            return
        # an address with a label (`eth0:1`, ifconfig alias style) belongs to eth0 too
        h.run("ip", "addr", "add", f"{topo.vip(50)}/24", "dev", "eth0", "label", "eth0:1")
        code = ("from vip_sidecar import netif; "
                "print(sorted(str(a) for a in netif.addresses('eth0') if a.version == 4))")
        res = h.run(sys.executable, "-c", code)
        assert res.stdout.strip() == str(sorted([h.ip, topo.vip(50)])), res.stdout
    finally:
        topo.close()


SCRIPT_WATCH = """
import subprocess
from vip_sidecar import netif

def ip(*argv):
    subprocess.run(["ip", *argv], check=True)

out = []
t1 = netif.address_table()
out.append(netif.address_table() is t1)  # nothing changed: the cached table
ip("addr", "add", "{vip}/32", "dev", "eth0")
t2 = netif.address_table()
out.append(t2 is not t1 and "{vip}" in t2[netif.ifindex("eth0")])
out.append(any(str(a) == "{vip}" for a in netif.addresses("eth0")))
ip("addr", "del", "{vip}/32", "dev", "eth0")
out.append(any(str(a) == "{vip}" for a in netif.addresses("eth0")))
out.append(netif.link_state("eth0").carrier)
ip("link", "set", "eth0", "down")
out.append(netif.link_state("eth0").up)
ip("link", "set", "eth0", "up")
out.append(netif.link_state("eth0").up)
ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
first = netif.ifindex("d0")
ip("link", "del", "d0")
out.append(netif.link_state("d0").exists)
ip("link", "add", "d0", "type", "veth", "peer", "name", "d1")
out.append(netif.ifindex("d0") != first)
print(out)
"""


def test_cached_interface_facts_follow_every_change_at_once():
    """netif answers from a cache emptied by the kernel's netlink notifications: an
    unchanged table is the same object, and every change made before a question (address
    added or deleted, link down and up, interface re-created) is in the answer."""
    topo = Topology(1)
    try:
        h = topo.hosts[0]
        res = h.run(sys.executable, "-c", SCRIPT_WATCH.format(vip=topo.vip()), check=False)
        assert res.returncode == 0, res.stderr
        assert res.stdout.strip() == str([True, True, True, False, True, False, True, False,
                                          True]), res.stdout
    finally:
        topo.close()
