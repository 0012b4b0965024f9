"""The README's claims about signals, measured against the real Debian ucarp."""

import signal
import time

import pytest

from tests.integration.harness import NETNS, UCARP, wait_for

pytestmark = [NETNS, UCARP, pytest.mark.netns, pytest.mark.ucarp]


@pytest.mark.parametrize("advbase", [1, 3])
def test_sigusr2_alone_the_node_is_master_again_when_ucarp_would_be(make_topo, advbase):
    """ucarp: SIGUSR2 -> BACKUP, sleep(3), then a fresh dead interval (3 x advbase)."""
    topo = make_topo(2)
    h1, h2 = topo.hosts
    scripts = ("-u", "/bin/true", "-d", "/bin/true", "-b", str(advbase), "-p", "secret")
    # two independent single-node groups on one segment: distinct vhids and VIPs
    ucarp = topo.ucarp(h1, *scripts, "-v", "11", "-a", topo.vip(111))
    ours = topo.sidecar(h2, *scripts, "-v", "12", "-a", topo.vip(112))
    wait_for(lambda: ucarp.state() == "MASTER" and ours.state() == "MASTER",
             3 * advbase + 4, what="both MASTER")
    time.sleep(advbase + 0.5)
    expected = 3 + 3 * advbase
    took = {}
    for name, node in (("ucarp", ucarp), ("vip-sidecar", ours)):
        t0 = time.time()
        node.signal(signal.SIGUSR2)
        wait_for(lambda n=node, t=t0: n.became("BACKUP", after=t), 2, what=f"{name} BACKUP")
        took[name] = wait_for(lambda n=node, t=t0: n.became("MASTER", after=t),
                              expected + 3, what=f"{name} MASTER again") - t0
    print(f"\nSIGUSR2 at -b {advbase}: ucarp MASTER again after {took['ucarp']:.2f} s, "
          f"vip-sidecar after {took['vip-sidecar']:.2f} s (3 s + 3 x advbase = {expected} s)")
    # ucarp checks its timer only at poll wake-ups, one advbase apart (up to that late,
    # plus libpcap's batching); we fire on time
    assert expected - 0.1 <= took["ucarp"] <= expected + advbase + 0.5
    assert expected - 0.05 <= took["vip-sidecar"] <= expected + 0.3


def test_sigterm_handover_to_a_ucarp_backup_is_bounded_by_its_capture_batching(make_topo):
    """SIGTERM sends the 255/255 bow-out; ucarp hears it only when libpcap hands over its
    buffer (batches of up to 1 s), a vip-sidecar backup within milliseconds."""
    topo = make_topo(2)
    h1, h2 = topo.hosts
    args = ("-p", "secret", "-v", "13", "-a", topo.vip(), "-u", "/bin/true", "-d", "/bin/true")
    backup = topo.ucarp(h2, *args, "-k", "50")
    took = []
    for _ in range(5):
        ours = topo.sidecar(h1, *args, "-k", "0", "-P")
        wait_for(lambda o=ours: o.state() == "MASTER", 8, what="ours MASTER (preempt)")
        t_backup = time.time()
        wait_for(lambda t=t_backup: backup.state() == "BACKUP", 4, what="ucarp BACKUP")
        time.sleep(1.2)
        t0 = time.time()
        ours.signal(signal.SIGTERM)
        took.append(wait_for(lambda t=t0: backup.became("MASTER", after=t), 2,
                             what="ucarp takeover") - t0)
        assert ours.wait(10) == 0
    print(f"\nSIGTERM of our master -> ucarp backup MASTER after "
          f"{min(took) * 1000:.0f}-{max(took) * 1000:.0f} ms over {len(took)} handovers "
          f"(advbase 1, dead interval 3 s)")
    assert max(took) < 1.1  # never the 3-s dead interval: the bow-out was heard
