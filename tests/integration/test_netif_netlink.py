"""vip_sidecar.netif's raw netlink address add/delete/dump (the alias provider's only way to
touch addresses) against a real kernel, inside a namespace."""

import sys

import pytest

from tests.integration.harness import NETNS, Topology

pytestmark = [NETNS, pytest.mark.netns]

SCRIPT = """
import socket, sys
from vip_sidecar import netif
idx = socket.if_nametoindex("eth0")
out = []
out.append(netif.change_ipv4_address("add", idx, "{vip}", 32))
out.append(netif.change_ipv4_address("add", idx, "{vip}", 32))
out.append("{vip}" in netif.address_table()[idx])
out.append(netif.change_ipv4_address("del", idx, "{vip}", 32))
out.append(netif.change_ipv4_address("del", idx, "{vip}", 32))
out.append("{vip}" in netif.address_table().get(idx, ()))
try:
    netif.change_ipv4_address("add", 999999, "{vip}", 32)
except OSError as exc:
    out.append(exc.errno)
print(out)
"""


def test_add_delete_dump_are_idempotent_and_match_ip():
    topo = Topology(1)
    try:
        h = topo.hosts[0]
        vip = topo.vip()
        res = h.run(sys.executable, "-c", SCRIPT.format(vip=vip), check=False)
        assert res.returncode == 0, res.stderr
        # added, already there, seen; removed, already gone, not seen; bad index refused
        assert res.stdout.strip() == "[True, False, True, True, False, False, 19]", res.stdout
        assert not h.has_address(vip)
        # an address with a label (`eth0:1`, ifconfig alias style) belongs to eth0 too
        h.run("ip", "addr", "add", f"{topo.vip(50)}/24", "dev", "eth0", "label", "eth0:1")
        code = ("from vip_sidecar import netif; "
                "print(sorted(map(str, netif.ipv4_addresses('eth0'))))")
        res = h.run(sys.executable, "-c", code)
        assert res.stdout.strip() == str(sorted([h.ip, topo.vip(50)])), res.stdout
    finally:
        topo.close()
