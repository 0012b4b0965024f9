"""Shared pieces of the benchmarks: the namespace test bed, the three daemons, measuring.

Every benchmark builds hosts with `testbed/harness.py` (`Topology`, shared with the tests), runs
vip-sidecar, the Debian `ucarp` and `keepalived` on the same hosts one after the other,
and removes every namespace and process (by PID / process group) on exit, Ctrl-C or
SIGTERM included.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv6Address
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testbed.harness import (  # noqa: E402
    Host,
    Proc,
    SidecarNode,
    Topology,
    UcarpNode,
    wait_for,
)

PASSWORD = "benchpw"
ADVBASE = 1
MASTER_SKEW = 0
BACKUP_SKEW = 50
KA_MASTER_PRIO = 250
KINDS = ("vip-sidecar", "ucarp", "keepalived")


@dataclass(frozen=True)
class Timers:
    """Advert timers of a failover run: CARP advbase/advskew for vip-sidecar and ucarp,
    advert_int and VRRP version for keepalived, and the prober's echo interval."""

    advbase: int = ADVBASE
    master_skew: int = MASTER_SKEW
    backup_skew: int = BACKUP_SKEW
    ka_advert_int: float = ADVBASE
    ka_version: int = 2
    ping_interval: float = 0.01

    @property
    def dead_interval(self) -> float:
        return dead_interval(self.advbase, self.backup_skew)


NORMAL_TIMERS = Timers()
# the fastest CARP setting: -b 0 (master -k 1: 3.9 ms adverts, ~256/s; backup -k 20: a
# 78 ms dead interval) against keepalived's fastest, VRRPv3 with centisecond adverts
FAST_TIMERS = Timers(
    advbase=0, master_skew=1, backup_skew=20, ka_advert_int=0.01, ka_version=3,
    ping_interval=0.002,
)  # fmt: skip


def ka_priority(advskew: int) -> int:
    """keepalived (VRRPv2) waits 3*advert_int + (256-prio)/256 s; CARP backups wait
    3*advbase + advskew/256 s: prio 256-advskew gives the same nominal dead interval."""
    return 256 - advskew


def dead_interval(advbase: int, advskew: int, ratio: int = 3) -> float:
    return advbase * ratio + advskew / 256


# ---------------------------------------------------------------------------- set-up
def require_tools(*names: str) -> None:
    problems = []
    if os.geteuid() != 0:
        problems.append("must run as root (network namespaces, raw sockets)")
    for name in ("ip", "ping", *names):
        if shutil.which(name) is None:
            problems.append(
                f"{name} not found (apt-get install -y ucarp keepalived iproute2 "
                "iputils-ping tcpdump)"
            )
    if problems:
        print("bench: cannot run: " + "; ".join(problems), file=sys.stderr)
        raise SystemExit(2)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_topology(n: int, family: str = "ipv4") -> Iterator[Topology]:
    """A Topology that is torn down whatever happens (SIGTERM/SIGHUP become Ctrl-C)."""
    old = {s: signal.signal(s, _raise_interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    topo = Topology(n, family=family)
    try:
        yield topo
    finally:
        # a second Ctrl-C during clean-up must not leave namespaces behind
        prev_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            topo.close()
        finally:
            signal.signal(signal.SIGINT, prev_int)
            for s, h in old.items():
                signal.signal(s, h)


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break

    def version(argv: list[str]) -> str:
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        out = (res.stdout + res.stderr).strip().splitlines()
        return out[0] if out else "?"

    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty", "--exclude", "*"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        rev = ""
    return {
        "commit": rev or "?",
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ucarp": dpkg_version("ucarp"),
        "keepalived": version(["keepalived", "--version"]),
        "loadavg": os.getloadavg(),
    }


def dpkg_version(pkg: str) -> str:
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return res.stdout.strip() or "?"


def print_header(title: str, argv: Sequence[str]) -> dict[str, Any]:
    info = machine_info()
    print(f"== {title}")
    print(f"   command: {' '.join(argv)}  (vip-sidecar at commit {info['commit']})")
    print(
        f"   machine: {info['cpu']} x{info['cores']}, kernel {info['kernel']}, "
        f"python {info['python']}, ucarp {info['ucarp']}, {info['keepalived']}, "
        f"loadavg {' '.join(f'{x:.2f}' for x in info['loadavg'])}"
    )
    sys.stdout.flush()
    return info


# ---------------------------------------------------------------------------- daemons
class Daemon:
    """One speaker for one VIP on one host; state read from its own log/status."""

    kind = ""

    def __init__(self, proc: Proc, host: Host) -> None:
        self.proc = proc
        self.host = host

    def state(self) -> str | None:
        raise NotImplementedError

    def became_master(self, after: float) -> float | None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return tree_pids(self.proc.pid)

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 0.0) -> None:
        if grace > 0 and self.proc.alive():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(grace)
        self.proc.stop()


class LoggedDaemon(Daemon):
    """vip-sidecar or ucarp: the harness node parses their own logs for the state."""

    def __init__(self, node: SidecarNode | UcarpNode, kind: str) -> None:
        super().__init__(node, node.host)
        self.node = node
        self.kind = kind

    def state(self) -> str | None:
        return self.node.state()

    def became_master(self, after: float) -> float | None:
        return self.node.became("MASTER", after)


class Keepalived(Daemon):
    """keepalived logs with 1-s resolution, so its state comes from a notify script that
    appends `<unix time> <state>` (the script's own fork/exec adds a few ms)."""

    kind = "keepalived"

    def __init__(self, proc: Proc, host: Host, notify_log: Path) -> None:
        super().__init__(proc, host)
        self.notify_log = notify_log

    def states(self) -> list[tuple[float, str]]:
        out = []
        with contextlib.suppress(OSError):
            for line in self.notify_log.read_text().splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    with contextlib.suppress(ValueError):
                        out.append((float(parts[0]), parts[1]))
        return out

    def state(self) -> str | None:
        states = self.states()
        return states[-1][1] if states else None

    def became_master(self, after: float) -> float | None:
        for ts, st in self.states():
            if st == "MASTER" and ts >= after:
                return ts
        return None


def ucarp_scripts(topo: Topology) -> tuple[str, str]:
    """The classic ucarp set-up: the up/down scripts add/remove VIP/32 on the interface."""
    up = topo.workdir / "ucarp-up.sh"
    if not up.exists():
        topo.write_script("ucarp-up.sh", 'exec ip addr add "$2"/32 dev "$1"')
        topo.write_script("ucarp-down.sh", 'ip addr del "$2"/32 dev "$1" 2>/dev/null; exit 0')
    return str(up), str(topo.workdir / "ucarp-down.sh")


_seq = [0]


def start_daemon(
    topo: Topology,
    kind: str,
    host: Host,
    *,
    vhid: int,
    vip: str,
    advskew: int,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timers: Timers = NORMAL_TIMERS,
    srcip: str | None = None,
) -> Daemon:
    _seq[0] += 1
    name = f"{kind}-{host.ns}-{_seq[0]}"
    common = (
        "-v", str(vhid), "-p", PASSWORD, "-a", vip, "-b", str(timers.advbase), "-k", str(advskew)
    )  # fmt: skip
    if kind == "vip-sidecar":
        return LoggedDaemon(
            topo.sidecar(
                host, *common, "--provider", "alias", *extra, name=name, env=env, srcip=srcip
            ),
            "vip-sidecar",
        )
    if kind == "ucarp":
        up, down = ucarp_scripts(topo)
        return LoggedDaemon(
            topo.ucarp(host, *common, "-u", up, "-d", down, "-z", *extra, name=name), "ucarp"
        )
    if kind == "keepalived":
        return start_keepalived(
            topo,
            host,
            name=name,
            vrid=vhid,
            vip=vip,
            priority=ka_priority(advskew) if advskew else KA_MASTER_PRIO,
            advert_int=timers.ka_advert_int,
            version=timers.ka_version,
        )
    raise ValueError(kind)


def start_keepalived(
    topo: Topology,
    host: Host,
    *,
    name: str,
    vrid: int,
    vip: str,
    priority: int,
    advert_int: float = ADVBASE,
    version: int = 2,
) -> Keepalived:
    w = topo.workdir
    notify_log = w / f"{name}.notify"
    notify = topo.write_script(f"{name}-notify.sh", f'echo "$(date +%s.%N) $3" >> {notify_log}')
    conf = w / f"{name}.conf"
    conf.write_text(
        f"""global_defs {{
    router_id {name}
    max_auto_priority
    vrrp_version {version}
}}
vrrp_instance VI_{vrid} {{
    state BACKUP
    interface {host.ifname}
    virtual_router_id {vrid}
    priority {priority}
    advert_int {advert_int:g}
    virtual_ipaddress {{
        {vip}/32 dev {host.ifname}
    }}
    notify {notify}
}}
"""
    )
    argv = [
        "keepalived", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
        "-f", str(conf), "-p", str(w / f"{name}.pid"), "-r", str(w / f"{name}.vrrp.pid"),
        "-c", str(w / f"{name}.check.pid"), "-b", str(w / f"{name}.bfd.pid"),
    ]  # fmt: skip
    proc = Proc(host, argv, w / f"{name}.log")
    topo.procs.append(proc)
    return Keepalived(proc, host, notify_log)


# ---------------------------------------------------------------------------- ping
PING_LINE = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\da-fA-F.:]+: icmp_seq=(\d+)")


class Pinger:
    """`ping -D -i 0.01` from a third host: one echo every 10 ms, replies time-stamped."""

    def __init__(self, topo: Topology, host: Host, addr: str, interval: float = 0.01) -> None:
        _seq[0] += 1
        self.proc = Proc(
            host,
            ["ping", "-D", "-n", "-i", f"{interval:g}", addr],
            topo.workdir / f"ping-{host.ns}-{_seq[0]}.log",
        )
        topo.procs.append(self.proc)

    def replies(self) -> list[tuple[float, int]]:
        out = []
        for line in self.proc.text().splitlines():
            m = PING_LINE.match(line)
            if m:
                out.append((float(m.group(1)), int(m.group(2))))
        return out

    def stop(self) -> list[tuple[float, int]]:
        if self.proc.alive():
            self.proc.signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(3)
        self.proc.stop()
        return self.replies()


# ---------------------------------------------------------------------------- capture
@dataclass(frozen=True)
class Advert:
    ts: float  # kernel receive time on the capturing host
    src: str
    vhid: int  # CARP vhid or VRRP vrid (both at the same offset)
    field2: int  # CARP advskew or VRRP priority
    field5: int  # CARP advbase or VRRP advert interval


class Capture:
    """tcpdump on a host's interface, IP protocol 112 only (CARP and VRRP), kernel time
    stamps with ns precision, parsed from the pcap file."""

    def __init__(self, topo: Topology, host: Host, bpf: str = "ip proto 112") -> None:
        _seq[0] += 1
        self.path = topo.workdir / f"cap-{host.ns}-{_seq[0]}.pcap"
        self.proc = Proc(
            host,
            ["tcpdump", "-i", host.ifname, "-n", "-U", "-B", "16384",
             "--time-stamp-precision=nano", "-w", str(self.path), bpf],
            topo.workdir / f"cap-{host.ns}-{_seq[0]}.log",
        )  # fmt: skip
        topo.procs.append(self.proc)
        wait_for(lambda: "listening on" in self.proc.text(), 5, what="tcpdump ready")

    def stop(self) -> None:
        if self.proc.alive():
            self.proc.signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
        self.proc.stop()

    def adverts(self) -> list[Advert]:
        try:
            data = self.path.read_bytes()
        except OSError:
            return []
        if len(data) < 24:
            return []
        magic = int.from_bytes(data[:4], "little")
        order: Literal["little", "big"] = "little"
        if magic not in (0xA1B2C3D4, 0xA1B23C4D):
            order = "big"
            magic = int.from_bytes(data[:4], "big")
        scale = 1e-9 if magic == 0xA1B23C4D else 1e-6
        link = int.from_bytes(data[20:24], order)
        l2 = 14 if link == 1 else 16  # Ethernet, or Linux cooked capture
        out, off = [], 24
        while off + 16 <= len(data):
            sec = int.from_bytes(data[off : off + 4], order)
            frac = int.from_bytes(data[off + 4 : off + 8], order)
            incl = int.from_bytes(data[off + 8 : off + 12], order)
            pkt = data[off + 16 : off + 16 + incl]
            off += 16 + incl
            if len(pkt) < l2 + 20 + 6:
                continue
            ip = pkt[l2:]
            if ip[0] >> 4 == 6:  # IPv6 (bpf "ip6 proto 112"): no extension headers here
                if ip[6] != 112 or len(ip) < 40 + 6:
                    continue
                src, body = str(IPv6Address(ip[8:24])), ip[40:]
            else:
                ihl = (ip[0] & 0x0F) * 4
                if ip[9] != 112 or len(ip) < ihl + 6:
                    continue
                src, body = ".".join(str(b) for b in ip[12:16]), ip[ihl:]
            out.append(Advert(sec + frac * scale, src, body[1], body[2], body[5]))
        return out


# ---------------------------------------------------------------------------- /proc
def tree_pids(root: int) -> list[int]:
    """root and all its descendants (via /proc/<pid>/task/<tid>/children)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if not Path(f"/proc/{pid}").exists():
            continue
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in (task / "children").read_text().split())
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU time of every live thread of these processes, nanosecond resolution
    (/proc/<pid>/task/<tid>/schedstat), plus reaped children (cutime+cstime ticks)."""
    total_ns = 0
    ticks = 0
    hz = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    total_ns += int((task / "schedstat").read_text().split()[0])
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat.rsplit(")", 1)[1].split()
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return total_ns / 1e9 + ticks / hz


def memory_kib(pids: Sequence[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over the processes."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
    return rss, pss


@dataclass
class Usage:
    cpu_pct: float
    rss_kib: int
    pss_kib: int
    peak_rss_kib: int
    nprocs: int


def measure_usage(
    groups: dict[str, Callable[[], list[int]]], window: float, sample_every: float = 1.0
) -> dict[str, Usage]:
    """CPU% (of one core) over `window` seconds and memory at its end, per group of pids."""
    start = {k: cpu_seconds(f()) for k, f in groups.items()}
    peak = dict.fromkeys(groups, 0)
    t0 = time.monotonic()
    while True:
        for k, f in groups.items():
            peak[k] = max(peak[k], memory_kib(f())[0])
        left = t0 + window - time.monotonic()
        if left <= 0:
            break
        time.sleep(min(sample_every, left))
    elapsed = time.monotonic() - t0
    out = {}
    for k, f in groups.items():
        pids = f()
        rss, pss = memory_kib(pids)
        used = cpu_seconds(pids) - start[k]
        out[k] = Usage(100.0 * used / elapsed, rss, pss, max(peak[k], rss), len(pids))
    return out


# ---------------------------------------------------------------------------- numbers
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); nan for no data."""
    if not values:
        return math.nan
    data = sorted(values)
    k = max(0, min(len(data) - 1, math.ceil(p / 100 * len(data)) - 1))
    return data[k]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def ratio(a: float, b: float) -> float:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return math.nan
    return a / b


def fmt(value: float, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def fmt_ratio(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3g}x"


MARKDOWN = [False]  # bench.report turns this on: tables as GitHub markdown


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    if MARKDOWN[0]:
        lines = [
            "| " + " | ".join(str(h) for h in headers) + " |",
            "|" + "|".join("---" for _ in headers) + "|",
        ]
        lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
        return "\n".join(lines)
    cells = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for n, r in enumerate(cells):
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_ratios(title: str, items: Sequence[tuple[str, float]]) -> None:
    print(f"ratios ({title}):")
    for label, value in items:
        print(f"  {label}: {fmt_ratio(value)}")
    sys.stdout.flush()


def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer runs, shorter windows (CI smoke)")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    return p


def write_json(path: str | None, data: Any) -> None:
    if path:
        Path(path).write_text(json.dumps(data, indent=2, default=str))
