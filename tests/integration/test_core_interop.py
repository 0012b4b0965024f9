"""vip-sidecar against the real Debian ucarp daemon, in network namespaces (issue: core)."""

import signal
import time

import pytest

from tests.integration.harness import NETNS, UCARP, wait_for

pytestmark = [NETNS, UCARP, pytest.mark.netns, pytest.mark.ucarp]

PW = ("-p", "secret", "-v", "7")


def interval(advbase: int, advskew: int) -> float:
    return advbase + advskew / 256


def common(topo):
    return (*PW, "-a", topo.vip(), "-u", "/bin/true", "-d", "/bin/true")


def test_ours_master_ucarp_backup_one_master_and_ucarp_accepts_our_adverts(make_topo):
    topo = make_topo(2)
    ours = topo.sidecar(topo.hosts[0], *common(topo), "-k", "0")
    wait_for(lambda: ours.state() == "MASTER", 6, what="ours MASTER")
    uc = topo.ucarp(topo.hosts[1], *common(topo), "-k", "50")
    # ucarp's dead interval is 3.2 s: watching 5 s proves it accepts our adverts
    time.sleep(5)
    assert uc.state() == "BACKUP"
    assert uc.became("MASTER") is None
    assert uc.warnings("Bad") == []
    assert ours.state() == "MASTER"
    assert [t[1] for t in ours.transitions()] == ["BACKUP", "MASTER"]
    assert ours.vip()["counters"]["drops"] == {}


def test_ucarp_master_ours_backup_and_we_accept_ucarp_adverts(make_topo):
    topo = make_topo(2)
    uc = topo.ucarp(topo.hosts[0], *common(topo), "-k", "0")
    wait_for(lambda: uc.state() == "MASTER", 6, what="ucarp MASTER")
    ours = topo.sidecar(topo.hosts[1], *common(topo), "-k", "50")
    time.sleep(5)
    vip = ours.vip()
    assert vip["state"] == "BACKUP"
    assert ours.became("MASTER") is None
    assert vip["counters"]["adverts_received"] >= 4
    assert vip["counters"]["drops"] == {}
    assert vip["master_seen"]["src"] == topo.hosts[0].ip
    assert uc.state() == "MASTER" and uc.warnings("Bad") == []


@pytest.mark.parametrize("backup_kind", ["ucarp", "ours"])
def test_kill9_of_our_master_backup_takes_over_within_bound(make_topo, backup_kind):
    topo = make_topo(2)
    ours = topo.sidecar(topo.hosts[0], *common(topo), "-k", "0")
    wait_for(lambda: ours.state() == "MASTER", 6, what="ours MASTER")
    make = topo.ucarp if backup_kind == "ucarp" else topo.sidecar
    backup = make(topo.hosts[1], *common(topo), "-k", "50")
    # a loaded machine needs ~2 s to start a daemon: wait for its state, then let it
    # hear a few adverts
    wait_for(lambda: backup.state() == "BACKUP", 10, what="backup BACKUP")
    time.sleep(1.5)
    assert backup.state() == "BACKUP"
    t0 = time.time()
    ours.signal(signal.SIGKILL)
    bound = 3 * interval(1, 50) + interval(1, 50)
    took = (
        wait_for(
            lambda: backup.became("MASTER", after=t0), bound + 1.0, what=f"{backup_kind} takeover"
        )
        - t0
    )
    print(f"\nkill -9 of our master -> {backup_kind} MASTER after {took:.3f}s (bound {bound:.3f}s)")
    assert took <= bound


def test_kill9_of_ucarp_master_ours_takes_over_within_bound(make_topo):
    topo = make_topo(2)
    uc = topo.ucarp(topo.hosts[0], *common(topo), "-k", "0")
    wait_for(lambda: uc.state() == "MASTER", 6, what="ucarp MASTER")
    ours = topo.sidecar(topo.hosts[1], *common(topo), "-k", "50")
    time.sleep(1.5)
    t0 = time.time()
    uc.signal(signal.SIGKILL)
    bound = 3 * interval(1, 50) + interval(1, 50)
    took = wait_for(lambda: ours.became("MASTER", after=t0), bound + 1.0, what="takeover") - t0
    print(f"\nkill -9 of ucarp master -> ours MASTER after {took:.3f}s (bound {bound:.3f}s)")
    assert took <= bound
    assert ours.vip()["last_reason"] == "master_down"


@pytest.mark.parametrize(
    ("backup_kind", "advbase", "limit"), [("ucarp", 3, 1.5), ("ours", 1, 0.25)]
)
def test_sigterm_of_our_master_bows_out_and_backup_takes_over_at_once(
    make_topo, backup_kind, advbase, limit
):
    topo = make_topo(2)
    down_log = topo.workdir / "down.log"
    down = topo.write_script("down.sh", f'echo "$(date +%s.%N) $*" >> {down_log}')
    ours = topo.sidecar(
        topo.hosts[0],
        *PW,
        "-a",
        topo.vip(),
        "-u",
        "/bin/true",
        "-d",
        down,
        "-b",
        str(advbase),
        "-k",
        "0",
    )
    wait_for(lambda: ours.state() == "MASTER", 3 * advbase + 3, what="ours MASTER")
    make = topo.ucarp if backup_kind == "ucarp" else topo.sidecar
    backup = make(topo.hosts[1], *common(topo), "-b", str(advbase), "-k", "50")
    wait_for(lambda: backup.state() == "BACKUP", 10, what="backup BACKUP")  # start-up
    time.sleep(advbase + 0.5)
    assert backup.state() == "BACKUP"
    t0 = time.time()
    ours.signal(signal.SIGTERM)
    took = wait_for(lambda: backup.became("MASTER", after=t0), advbase, what="takeover") - t0
    print(
        f"\nSIGTERM of our master -> {backup_kind} MASTER after {took * 1000:.1f} ms "
        f"(advbase {advbase}s)"
    )
    assert took < limit
    assert ours.wait(10) == 0
    # make-before-break: our down action ran after the new master was elected
    last_down = float(down_log.read_text().splitlines()[-1].split()[0])
    assert last_down >= backup.became("MASTER", after=t0) - 0.05


def test_preempt_lower_advskew_takes_over_from_running_ucarp_master(make_topo):
    topo = make_topo(2)
    uc = topo.ucarp(topo.hosts[0], *common(topo), "-k", "100")
    wait_for(lambda: uc.state() == "MASTER", 6, what="ucarp MASTER")
    t0 = time.time()
    ours = topo.sidecar(topo.hosts[1], *common(topo), "-k", "10", "-P")
    wait_for(lambda: ours.state() == "MASTER", 3, what="preemption")
    assert ours.vip()["last_reason"] == "preempt"
    wait_for(lambda: uc.became("BACKUP", after=t0), 3, what="ucarp yields")
    assert uc.warnings("Preferred master advertised")
    time.sleep(2)
    assert ours.state() == "MASTER" and uc.state() == "BACKUP"


def test_without_preempt_better_node_stays_backup(make_topo):
    topo = make_topo(2)
    uc = topo.ucarp(topo.hosts[0], *common(topo), "-k", "100")
    wait_for(lambda: uc.state() == "MASTER", 6, what="ucarp MASTER")
    ours = topo.sidecar(topo.hosts[1], *common(topo), "-k", "10")
    time.sleep(5)
    assert ours.state() == "BACKUP" and ours.became("MASTER") is None
    assert uc.state() == "MASTER"


def test_ucarp_with_preempt_takes_over_from_our_master(make_topo):
    topo = make_topo(2)
    ours = topo.sidecar(topo.hosts[0], *common(topo), "-k", "100")
    wait_for(lambda: ours.state() == "MASTER", 6, what="ours MASTER")
    uc = topo.ucarp(topo.hosts[1], *common(topo), "-k", "10", "-P")
    wait_for(lambda: uc.state() == "MASTER", 4, what="ucarp preempts")
    wait_for(lambda: ours.state() == "BACKUP", 2, what="ours yields")
    assert ours.vip()["last_reason"] == "preferred_master"
