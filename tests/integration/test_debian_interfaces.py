"""--from-interfaces in network namespaces against the real ucarp started the Debian way:
by the package's own /etc/network/if-up.d/ucarp hook, given ifupdown's IF_* variables
for the same stanzas. h1 runs the README.Debian example (addresses moved into the test
subnet) plus a second interface from a `source-directory` file; h2 runs two ucarps."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.harness import NETNS, UCARP, sh, wait_for
from tests.unit.test_interfaces_import import HOOK, README, readme_example
from vip_sidecar import interfaces_import

pytestmark = [NETNS, UCARP, pytest.mark.netns, pytest.mark.ucarp]
if not (README.exists() and HOOK.exists()):
    pytestmark.append(pytest.mark.skip(reason="needs Debian's ucarp package files"))


def run_debian_hook(host, iface, options, workdir):
    """What ifup does after bringing `iface` up: the ucarp hook with IF_* variables.
    The hook daemonizes ucarp (-B); its pid is read back from the namespace."""
    env = {"PATH": os.environ["PATH"], "IFACE": iface, "MODE": "start", "PHASE": "post-up"}
    env |= {"IF_" + k.upper().replace("-", "_"): v for k, v in options.items()}
    before = namespace_pids(host)
    subprocess.run(
        ["ip", "netns", "exec", host.ns, "sh", str(HOOK)], env=env, check=True, timeout=10
    )
    return wait_for(lambda: namespace_pids(host) - before, 5, what="ucarp daemonized")


def namespace_pids(host):
    out = sh("ip", "netns", "pids", host.ns).stdout.split()
    return {
        int(p)
        for p in out
        if Path(f"/proc/{p}/comm").exists()
        and Path(f"/proc/{p}/comm").read_text().strip() == "ucarp"
    }


def test_readme_example_and_a_sourced_interface_against_debian_ucarp(make_topo):
    topo = make_topo(2)
    h1, h2 = topo.hosts
    net = topo.net
    # eth1 on the same bridge, in a second subnet
    topo.add_leg(h1, "eth1", "q1", f"10.{net}.1.1/24")
    topo.add_leg(h2, "eth1", "q2", f"10.{net}.1.2/24")
    vip0, vip1 = f"10.{net}.0.100", f"10.{net}.1.100"

    def has_vip1(host):
        return any(a.split("/")[0] == vip1 for a in re_addrs(host, "eth1"))

    etc = topo.workdir / "etc-network"
    (etc / "interfaces.d").mkdir(parents=True)
    example = readme_example()
    assert "ucarp-master yes" in example and "iface eth0:ucarp inet static" in example
    (etc / "interfaces").write_text(
        example.replace("10.0.0.2", h1.ip).replace("10.0.0.1", vip0)
        + "\nsource-directory interfaces.d\n"
    )
    (etc / "interfaces.d" / "eth1").write_text(
        f"iface eth1 inet static\n\taddress 10.{net}.1.1\n\tnetmask 255.255.255.0\n"
        f"\tucarp-vid 4\n\tucarp-vip {vip1}\n\tucarp-password other\n\tucarp-advbase 1\n"
        f"\tucarp-master yes\niface eth1:ucarp inet static\n\taddress {vip1}\n\tnetmask 24\n"
    )

    # h2: the real ucarp, started by Debian's hook; its scripts move the VIP like vip-up
    # would (ifup on the test machine's own /etc/network/interfaces is not an option)
    pids = set()
    try:
        for iface, vip, vid, pw in (
            ("eth0", vip0, "3", "16charsatmost"),
            ("eth1", vip1, "4", "other"),
        ):
            up = topo.write_script(
                f"up-{iface}", f'ip addr add "$2"/32 dev "$1"; echo up >> {topo.workdir}/h2-{iface}'
            )
            down = topo.write_script(
                f"down-{iface}",
                f'ip addr del "$2"/32 dev "$1"; echo down >> {topo.workdir}/h2-{iface}',
            )
            ip = h2.ip if iface == "eth0" else f"10.{net}.1.2"
            pids |= run_debian_hook(
                h2,
                iface,
                {
                    "address": ip,
                    "netmask": "255.255.255.0",
                    "ucarp-vid": vid,
                    "ucarp-vip": vip,
                    "ucarp-password": pw,
                    "ucarp-advskew": "50",
                    "ucarp-advbase": "1",
                    "ucarp-upscript": up,
                    "ucarp-downscript": down,
                },
                topo.workdir,
            )
        time.sleep(0.5)
        assert len(pids) == 2
        wait_for(
            lambda: h2.has_address(vip0) and has_vip1(h2), 8, what="h2's ucarps MASTER while alone"
        )

        node = topo.sidecar(h1, "--from-interfaces", str(etc / "interfaces"), name="h1")
        # ucarp-master yes + advskew 0 (README) beats h2's advskew 50: h1 preempts both
        wait_for(
            lambda: (
                (s := node.status()) and [v["state"] for v in s["vips"]] == ["MASTER", "MASTER"]
            ),
            10,
            what="h1 MASTER on eth0 and eth1",
        )
        st = node.status()
        assert [(v["name"], v["interface"], v["vhid"]) for v in st["vips"]] == [
            ("eth0-ucarp", "eth0", 3),
            ("eth1-ucarp", "eth1", 4),
        ]
        # the :ucarp stanzas' netmasks: 255.255.255.255 and 24
        wait_for(lambda: f"{vip0}/32" in h1.addresses(), 5, what="eth0 VIP /32")
        wait_for(lambda: f"{vip1}/24" in re_addrs(h1, "eth1"), 5, what="eth1 VIP /24")
        wait_for(lambda: not h2.has_address(vip0), 5, what="h2 ran its down script")
        # ucarp runs its down script at start-up too (no -n): down, up, down
        # (the script removes the address before it writes its line: wait for the line)
        wait_for(
            lambda: (topo.workdir / "h2-eth0").read_text().split()[-2:] == ["up", "down"],
            2,
            what="h2's down script finished",
        )

        t0 = time.time()
        node.signal(signal.SIGTERM)
        assert node.wait(15) == 0
        wait_for(lambda: h2.has_address(vip0) and has_vip1(h2), 5, what="h2 takes both VIPs back")
        took = time.time() - t0
        print(f"\nSIGTERM on h1 -> Debian ucarp on h2 holds both VIPs after {took:.2f}s")
        assert not h1.has_address(vip0) and not has_vip1(h1)
        assert took < 3.0  # bow-out: no dead interval (3 s) to wait
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def re_addrs(host, ifname):
    out = host.run("ip", "-o", "-4", "addr", "show", "dev", ifname).stdout
    return [line.split()[3] for line in out.splitlines()]


def test_import_module_names_every_option_of_the_hook():
    """Every IF_UCARP_* variable the hook reads is an option the import understands."""
    import re

    read = set(re.findall(r"IF_UCARP_([A-Z_]+)", HOOK.read_text()))
    known = {k.removeprefix("ucarp-").upper() for k in interfaces_import.UCARP_OPTIONS}
    assert read == known
