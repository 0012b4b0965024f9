"""A flood of wrong-password adverts from a third host: the master keeps its place and
its adverts on time, and every packet that reached the daemon's socket is accounted
for, the ones the kernel dropped on a full receive buffer included (kernel_rcvbuf)."""

import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from tests.integration.harness import NETNS, wait_for
from vip_sidecar import carp
from vip_sidecar.inet import DEFAULT_GROUP4

pytestmark = [NETNS, pytest.mark.netns]

# bounded in count and in time: at most FLOOD_PACKETS frames, at most FLOOD_SECONDS
FLOOD_PACKETS = 400_000
FLOOD_SECONDS = 6.0
FLOODER = """
import socket, sys, time
frame = bytes.fromhex(sys.argv[2]); count = int(sys.argv[3]); limit = float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((sys.argv[1], 0))
sent, t0 = 0, time.monotonic()
send = s.send
while sent < count:
    for _ in range(1000):
        send(frame)
    sent += 1000
    if time.monotonic() - t0 > limit:
        break
print(sent, time.monotonic() - t0)
"""


def wrong_password_advert(vhid, vip, src):
    auth = carp.Authenticator(b"not-the-password", vhid, IPv4Address(vip))
    payload = carp.encode_carp(vhid, 1, 0, 1, auth.digest(1))
    ip = carp.encode_ip(payload, IPv4Address(src), DEFAULT_GROUP4, 1, ttl=255)
    return carp.encode_ethernet(ip, carp.group_mac(DEFAULT_GROUP4),
                                carp.virtual_mac(vhid), 0x0800)


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, clock ticks


def test_flood_of_wrong_password_adverts_is_counted_and_changes_nothing(make_topo):
    topo = make_topo(3)
    h1, h2, h3 = topo.hosts
    args = ("-p", "secret", "-v", "21", "-a", topo.vip())
    master = topo.sidecar(h1, *args, "-k", "0")
    wait_for(lambda: master.state() == "MASTER", 6, what="MASTER")
    backup = topo.sidecar(h2, *args, "-k", "50")
    wait_for(lambda: backup.state() == "BACKUP", 5, what="BACKUP")
    time.sleep(1.5)
    before = master.status()
    sent_before = before["vips"][0]["counters"]["adverts_sent"]
    cpu0, t0 = cpu_seconds(master.pid), time.monotonic()
    frame = wrong_password_advert(21, topo.vip(), h3.ip)
    out = h3.run(sys.executable, "-c", FLOODER, h3.ifname, frame.hex(),
                 str(FLOOD_PACKETS), str(FLOOD_SECONDS)).stdout.split()
    sent, flood_s = int(out[0]), float(out[1])
    time.sleep(2.5)  # the loop drains its buffer; housekeeping reads the kernel counter
    cpu = cpu_seconds(master.pid) - cpu0
    st = master.status()
    counted = st["vips"][0]["counters"]["drops"].get("bad_digest", 0)
    kernel = st["interface_drops"].get("eth0/kernel_rcvbuf", 0)
    rate = sent / flood_s
    print(f"\nflood: {sent} frames in {flood_s:.2f} s ({rate:,.0f}/s) from a third host; "
          f"daemon checked and dropped {counted} (bad_digest), kernel dropped {kernel} "
          f"(kernel_rcvbuf, flood and any genuine adverts lost with it); "
          f"daemon CPU {cpu:.2f} s for {time.monotonic() - t0:.1f} s: "
          f"{counted / max(cpu, 0.01):,.0f} packets per CPU-second; "
          f"receive buffer {st['receive_buffer_bytes']['eth0']} bytes")
    # the master is unmoved and kept advertising on time. The backup is flooded too: when
    # its own buffer overflows it may lose the master's adverts with the flood and claim
    # for a while (seen under load); its kernel_rcvbuf count says why, and it yields
    # again once the flood is over
    backup_st = backup.status()
    print(f"backup: transitions {[t[1] for t in backup.transitions()]}, kernel dropped "
          f"{backup_st['interface_drops'].get('eth0/kernel_rcvbuf', 0)}")
    assert master.state() == "MASTER" and [t[1] for t in master.transitions()] == [
        "BACKUP", "MASTER"]
    wait_for(lambda: backup.state() == "BACKUP", 4, what="backup yields after the flood")
    assert st["healthy"] is True
    elapsed_adverts = st["vips"][0]["counters"]["adverts_sent"] - sent_before
    assert elapsed_adverts >= int(flood_s + 2.5) - 1  # one a second, on time
    # every frame is accounted for: checked by the daemon or dropped by its kernel
    # socket; a small rest may be lost in the kernel's backlog before any socket
    assert kernel > 0, "the flood did not overflow the buffer: no proof of the counter"
    # the kernel's count also holds the peer's genuine adverts lost in the flood (about
    # one a second if the flooded backup claimed for a while)
    assert counted <= sent and counted + kernel <= sent + 20
    assert counted + kernel >= 0.9 * sent, (sent, counted, kernel)
