"""Network-namespace test bed: hosts on a bridge, our daemon and the real ucarp as peers.

Shared by the tests (tests/integration) and the benchmarks (bench/); it knows nothing of
pytest.

Every namespace and process a test starts is recorded and removed by PID / name in
`close()`, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from vip_sidecar.status_client import fetch_status

REPO = Path(__file__).resolve().parents[1]


def have_netns() -> bool:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        return False
    name = f"vsprobe{os.getpid()}"
    ok = subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode == 0
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return ok


def sh(*argv: str, check: bool = True, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(argv)
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {res.stderr.strip()}")
    return res


def wait_for(
    pred: Callable[[], Any], timeout: float, interval: float = 0.02, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class Host:
    ns: str
    ip: str  # the srcip sidecar() passes: IPv4, or IPv6 on an IPv6-only topology
    ifname: str = "eth0"
    mac: str = ""
    ip6: str = ""  # the host's IPv6 address (topologies with family ipv6 or dual)

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*argv, check=check, ns=self.ns)

    def addresses(self) -> list[str]:
        out = self.run("ip", "-o", "-4", "addr", "show", "dev", self.ifname).stdout
        return re.findall(r"inet (\d+\.\d+\.\d+\.\d+/\d+)", out)

    def addresses6(self) -> list[str]:
        out = self.run("ip", "-o", "-6", "addr", "show", "dev", self.ifname).stdout
        return re.findall(r"inet6 ([0-9a-f:]+/\d+)", out)

    def has_address(self, addr: str) -> bool:
        found = self.addresses6() if ":" in addr else self.addresses()
        return any(a.split("/")[0] == addr for a in found)

    def link_local(self) -> str:
        return next(a.split("/")[0] for a in self.addresses6() if a.startswith("fe80:"))


class Proc:
    """A process started inside a namespace, logging to a file."""

    def __init__(
        self, host: Host, argv: list[str], log: Path, env: dict[str, str] | None = None
    ) -> None:
        self.host = host
        self.argv = argv
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 - closed in stop()
        # the daemon reads VIP_SIDECAR_* as config: test knobs of the runner (cache paths,
        # mirrors) must not reach it; a test passes the ones it means through `env`
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("VIP_SIDECAR_")}
        full_env = {**inherited, **(env or {})}
        self.popen = subprocess.Popen(
            ["ip", "netns", "exec", host.ns, *argv],
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
        self.pid = self.popen.pid

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)
        self._fh.close()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


class SidecarNode(Proc):
    """Our daemon, JSON logs, a status socket."""

    def __init__(
        self,
        host: Host,
        args: list[str],
        workdir: Path,
        name: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.socket = str(workdir / f"{name}.sock")
        argv = [
            sys.executable,
            "-m",
            "vip_sidecar",
            "run",
            *args,
            "--log-format",
            "json",
            "--status-socket",
            self.socket,
            "--facility",
            "none",
        ]
        super().__init__(
            host, argv, workdir / f"{name}.log", env={"PYTHONPATH": str(REPO), **(env or {})}
        )

    def status(self) -> dict[str, Any] | None:
        try:
            return fetch_status(self.socket, None, timeout=1.0)  # type: ignore[no-any-return]
        except (OSError, ValueError):
            return None

    def vip(self, index: int = 0) -> dict[str, Any]:
        st = wait_for(self.status, 10, what=f"{self.name} status socket")
        return st["vips"][index]  # type: ignore[no-any-return]

    def state(self, index: int = 0) -> str | None:
        st = self.status()
        return st["vips"][index]["state"] if st else None

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def transitions(self) -> list[tuple[float, str, str]]:
        """(unix time, new state, reason) for every transition logged."""
        return [
            (datetime.fromisoformat(e["time"]).timestamp(), e["new"], e["reason"])
            for e in self.events()
            if e.get("event") == "transition"
        ]

    def became(self, state: str, after: float = 0.0) -> float | None:
        for ts, new, _ in self.transitions():
            if new == state and ts >= after:
                return ts
        return None


UCARP_LINE = re.compile(r"^(\S+): \[(\w+)\] (.*)$")


class UcarpNode(Proc):
    def __init__(self, host: Host, args: list[str], workdir: Path, name: str) -> None:
        self.name = name
        super().__init__(host, ["ucarp", *args], workdir / f"{name}.log")

    def lines(self) -> list[tuple[float, str, str]]:
        out = []
        for line in self.text().splitlines():
            m = UCARP_LINE.match(line)
            if m:
                try:
                    ts = datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").timestamp()
                except ValueError:
                    continue
                out.append((ts, m.group(2), m.group(3)))
        return out

    def state(self) -> str | None:
        states = [
            msg.split(": ")[1]
            for _, _, msg in self.lines()
            if msg.startswith("Switching to state: ")
        ]
        return states[-1] if states else None

    def became(self, state: str, after: float = 0.0) -> float | None:
        for ts, _, msg in self.lines():
            if msg == f"Switching to state: {state}" and ts >= after:
                return ts
        return None

    def warnings(self, needle: str) -> list[str]:
        return [msg for _, _, msg in self.lines() if needle in msg]


NET_LOCKS = Path("/run/vip-sidecar-test-nets")


def _allocate_net() -> tuple[int, Path]:
    """Parallel test runs (and attach_root) must not share a subnet: the root namespace
    would route to the wrong bridge. A lock file per subnet, created atomically, is
    removed by close(); stale ones (their pid gone) are reclaimed."""
    NET_LOCKS.mkdir(parents=True, exist_ok=True)
    used = sh("ip", "-o", "-4", "addr").stdout
    for net in range(100, 250):
        if f" 10.{net}." in used:
            continue
        lock = NET_LOCKS / str(net)
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                owner = int(lock.read_text() or 0)
            except (OSError, ValueError):
                continue
            if owner and Path(f"/proc/{owner}").exists():
                continue
            lock.unlink(missing_ok=True)
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                continue
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return net, lock
    raise RuntimeError("no free 10.x.0.0/24 test subnet")


@dataclass
class Topology:
    """N hosts (eth0 = 10.<net>.0.<i>/24) on one Linux bridge in a hub namespace.

    family "ipv6": an IPv6-only link (eth0 = fd00:<net>::<i>/64, no IPv4, DAD off so every
    address is usable at once); "dual": both."""

    n: int
    net: int = 0  # 0: allocate a 10.<net>.0.0/24 no other test bed on this machine uses
    family: str = "ipv4"
    tag: str = field(
        default_factory=lambda: f"{os.getpid() % 100000}{int(time.time() * 1000) % 1000}"
    )
    hosts: list[Host] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="vip-sidecar-")))

    def __post_init__(self) -> None:
        self._net_lock: Path | None = None
        if not self.net:
            self.net, self._net_lock = _allocate_net()
        self.hub = f"vh{self.tag}"
        self._namespaces = [self.hub]
        sh("ip", "netns", "add", self.hub)
        self.hub_run("ip", "link", "set", "lo", "up")
        self.hub_run("ip", "link", "add", "br0", "type", "bridge")
        # no IGMP snooping: keep the bridge a dumb L2 segment, like a cloud-less LAN
        self.hub_run("ip", "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        # no br_netfilter: it silently drops malformed IPv4, which we must see to count
        self.hub_run("ip", "link", "set", "br0", "type", "bridge", "nf_call_iptables", "0")
        self.hub_run("sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0", check=False)
        self.hub_run("ip", "link", "set", "br0", "up")
        for i in range(1, self.n + 1):
            self.add_host(i)

    def add_host(self, i: int, ifname: str = "eth0", ip: str | None = None) -> Host:
        ns = f"vn{self.tag}h{i}"
        sh("ip", "netns", "add", ns)
        self._namespaces.append(ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
        if self.family != "ipv4":
            # before the veth exists, so its link-local address skips DAD too; addresses
            # survive `link down` as IPv4 ones do (a crashed master's VIP is a leftover)
            for conf in ("all", "default"):
                sh("sysctl", "-qw", f"net.ipv6.conf.{conf}.accept_dad=0", ns=ns)
                sh("sysctl", "-qw", f"net.ipv6.conf.{conf}.keep_addr_on_down=1", ns=ns)
        ip6 = self.vip6(i) if self.family != "ipv4" else ""
        ip = ip or (ip6 if self.family == "ipv6" else f"10.{self.net}.0.{i}")
        host = Host(ns, ip, ifname, f"02:00:00:{self.net:02x}:00:{i:02x}", ip6)
        self.hosts.append(host)
        self._plug(host, i)
        return host

    def _plug(self, host: Host, i: int) -> None:
        v4 = f"{host.ip}/24" if self.family != "ipv6" else None
        self.add_leg(host, host.ifname, f"p{i}", v4, host.mac)
        if host.ip6:
            sh("ip", "addr", "add", f"{host.ip6}/64", "dev", host.ifname, "nodad", ns=host.ns)

    def add_leg(
        self, host: Host, ifname: str, port: str, address: str | None, mac: str | None = None
    ) -> None:
        """A veth from the host's namespace to the bridge: its main interface, or a
        second NIC (another ifname and port) for multi-interface tests."""
        sh(
            "ip",
            "link",
            "add",
            ifname,
            "netns",
            host.ns,
            "type",
            "veth",
            "peer",
            "name",
            port,
            "netns",
            self.hub,
        )
        self.hub_run("ip", "link", "set", port, "master", "br0")
        self.hub_run("ip", "link", "set", port, "up")
        if mac:
            sh("ip", "link", "set", ifname, "address", mac, ns=host.ns)
        sh("ip", "link", "set", ifname, "up", ns=host.ns)
        if address is not None:
            sh("ip", "addr", "add", address, "dev", ifname, ns=host.ns)

    def recreate_link(self, host: Host, gap_s: float = 0.0) -> None:
        """Delete the host's interface and create it again under the same name (what a
        CNI or a rebuilt bond does): same name, MAC and IP, a new ifindex."""
        host.run("ip", "link", "del", host.ifname)
        time.sleep(gap_s)
        self._plug(host, self.hosts.index(host) + 1)

    def attach_root(self) -> str:
        """Give the test process itself a leg on the bridge (10.<net>.0.254) so servers
        it starts (moto, fake IMDS, fake apiserver) are reachable from every host.
        The veth pair disappears with the hub namespace in close()."""
        if getattr(self, "_root_ip", None):
            return self._root_ip  # type: ignore[no-any-return]
        root_if = f"vr{self.tag}"[:15]
        sh("ip", "link", "add", root_if, "type", "veth", "peer", "name", "proot", "netns", self.hub)
        self.hub_run("ip", "link", "set", "proot", "master", "br0")
        self.hub_run("ip", "link", "set", "proot", "up")
        ip = f"10.{self.net}.0.254"
        sh("ip", "addr", "add", f"{ip}/24", "dev", root_if)
        sh("ip", "link", "set", root_if, "up")
        self._root_ip = ip
        return ip

    def hub_run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh(*argv, check=check, ns=self.hub)

    def vip(self, last: int = 100) -> str:
        return f"10.{self.net}.0.{last}"

    def vip6(self, last: int = 100) -> str:
        return f"fd00:{self.net}::{last}"

    def sidecar(
        self,
        host: Host,
        *args: str,
        name: str | None = None,
        env: dict[str, str] | None = None,
        srcip: str | None = None,
    ) -> SidecarNode:
        node = SidecarNode(
            host,
            ["-i", host.ifname, "-s", srcip or host.ip, *args],
            self.workdir,
            name or f"sc-{host.ns}-{len(self.procs)}",
            env,
        )
        self.procs.append(node)
        return node

    def ucarp(self, host: Host, *args: str, name: str | None = None) -> UcarpNode:
        node = UcarpNode(
            host,
            ["-i", host.ifname, "-s", host.ip, *args],
            self.workdir,
            name or f"uc-{host.ns}-{len(self.procs)}",
        )
        self.procs.append(node)
        return node

    def block_multicast(self) -> None:
        """Drop every IPv4 multicast packet crossing the bridge (what clouds do)."""
        self.hub_run("nft", "add", "table", "bridge", "vipt")
        self.hub_run(
            "nft",
            "add",
            "chain",
            "bridge",
            "vipt",
            "vipfwd",
            "{ type filter hook forward priority 0; }",
        )
        self.hub_run(
            "nft", "add", "rule", "bridge", "vipt", "vipfwd", "ip", "daddr", "224.0.0.0/4", "drop"
        )

    def carp_loss(self, percent: int) -> None:
        """Random loss of protocol-112 frames on the bridge. This kernel has no sch_netem,
        so nftables' `numgen random` on the bridge forward hook plays tc netem's part."""
        if not getattr(self, "_loss_table", False):
            self.hub_run("nft", "add", "table", "bridge", "loss")
            self.hub_run(
                "nft",
                "add",
                "chain",
                "bridge",
                "loss",
                "lossfwd",
                "{ type filter hook forward priority -10; }",
            )
            self._loss_table = True
        self.hub_run("nft", "flush", "chain", "bridge", "loss", "lossfwd")
        if percent >= 100:
            self.hub_run(
                "nft", "add", "rule", "bridge", "loss", "lossfwd", "ip", "protocol", "112", "drop"
            )
        elif percent > 0:
            self.hub_run(
                "nft",
                "add",
                "rule",
                "bridge",
                "loss",
                "lossfwd",
                "ip",
                "protocol",
                "112",
                "numgen",
                "random",
                "mod",
                "100",
                "<",
                str(percent),
                "drop",
            )

    def block_carp_between(self, a: Host, b: Host) -> None:
        """Partition: drop protocol 112 between two hosts' bridge ports."""
        self.hub_run("nft", "add", "table", "bridge", "part")
        self.hub_run(
            "nft",
            "add",
            "chain",
            "bridge",
            "part",
            "partfwd",
            "{ type filter hook forward priority 0; }",
        )
        for x, y in ((a, b), (b, a)):
            self.hub_run(
                "nft",
                "add",
                "rule",
                "bridge",
                "part",
                "partfwd",
                "ether",
                "saddr",
                "!=",
                "00:00:00:00:00:00",
                "ip",
                "saddr",
                x.ip,
                "ip",
                "protocol",
                "112",
                "iifname",
                self.port_of(x),
                "oifname",
                self.port_of(y),
                "drop",
            )

    def port_of(self, host: Host) -> str:
        return f"p{self.hosts.index(host) + 1}"

    def write_script(self, name: str, body: str) -> str:
        path = self.workdir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(0o755)
        return str(path)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)
        if self._net_lock is not None:
            self._net_lock.unlink(missing_ok=True)
        if not os.environ.get("VIPSIDECAR_TEST_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)


SNIFFER = """
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(int(sys.argv[2], 0)))
s.bind((sys.argv[1], 0))
while True:
    data, addr = s.recvfrom(2048)
    if addr[2] != socket.PACKET_OUTGOING:
        print(f"{time.time():.6f} {data.hex()}", flush=True)
"""


class Sniffer(Proc):
    """Captures frames of one ethertype on a host's interface: `ts hex` per line."""

    def __init__(self, topo: Topology, host: Host, ethertype: int) -> None:
        super().__init__(
            host,
            [sys.executable, "-c", SNIFFER, host.ifname, hex(ethertype)],
            topo.workdir / f"sniff-{host.ns}-{ethertype:x}.log",
        )
        topo.procs.append(self)

    def frames(self) -> list[tuple[float, bytes]]:
        out = []
        for line in self.text().splitlines():
            ts, _, hexdata = line.partition(" ")
            try:
                out.append((float(ts), bytes.fromhex(hexdata)))
            except ValueError:
                continue
        return out


def inject_frame(host: Host, frame: bytes) -> None:
    """Send a raw Ethernet frame from inside a namespace (crafted packets)."""
    code = (
        "import socket,sys;s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW);"
        f"s.bind(({host.ifname!r},0));s.send(bytes.fromhex(sys.argv[1]))"
    )
    host.run(sys.executable, "-c", code, frame.hex())


def ping_until_reply(host: Host, addr: str, deadline_s: float = 10.0) -> float | None:
    """Seconds until the first echo reply (ping every 10 ms; IPv4 or IPv6), or None."""
    t0 = time.time()
    res = host.run(
        "ping", "-n", "-q", "-i", "0.01", "-c", "1", "-w", str(int(deadline_s)), addr, check=False
    )
    return time.time() - t0 if res.returncode == 0 else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
