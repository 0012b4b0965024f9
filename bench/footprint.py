"""Footprint: idle RSS/PSS and CPU% of a master and a backup at advbase 1.

For each speaker a pair is started (h1 master, h2 backup, one VIP), left to settle, then
CPU time (nanosecond schedstat of every thread, summed over the whole process tree:
keepalived's parent and VRRP child) is sampled over the window and memory read at its
end. vip-sidecar is measured in three shapes:

* `alias`: `--provider alias` only, no HTTP/status socket (what ucarp offers);
* `alias+http`: the same with `--http` (aiohttp and prometheus-client are loaded only
  when the HTTP server or the status socket is enabled);
* `alias+boto3+k8s`: the same daemon after importing what the aws and kubernetes
  providers load when they are configured (boto3 with an EC2 client, the kubernetes
  client with CoreV1/CoordinationV1 APIs,
  vip_sidecar.providers.aws, vip_sidecar.providers.kubernetes). A
  configured aws/kubernetes provider would need IMDS/an API server to start; preloading
  measures the memory those libraries cost without any network.

A separate short run of the `alias` shape with `-X importtime` lists which of boto3,
botocore, kubernetes, aiohttp, prometheus_client the daemon actually imported.

    python -m bench.footprint [--quick] [--window 60]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: python bench/footprint.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    ADVBASE,
    BACKUP_SKEW,
    MASTER_SKEW,
    PASSWORD,
    REPO,
    Daemon,
    Host,
    Proc,
    SidecarNode,
    Topology,
    base_parser,
    bench_topology,
    fmt,
    measure_usage,
    print_header,
    print_ratios,
    ratio,
    require_tools,
    start_daemon,
    table,
    wait_for,
    write_json,
)

VHID = 7
PRELOAD = """
import runpy
import boto3
boto3.session.Session(region_name="us-east-1").client("ec2", endpoint_url="http://127.0.0.1:9")
from kubernetes import client, config
client.CoordinationV1Api(client.ApiClient(client.Configuration()))
client.CoreV1Api(client.ApiClient(client.Configuration()))
import vip_sidecar.providers.aws, vip_sidecar.providers.kubernetes
runpy.run_module("vip_sidecar", run_name="__main__", alter_sys=True)
"""
# no credential or metadata look-ups can leave the namespace
PRELOAD_ENV = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
OURS_SHAPES = ("alias", "alias+http", "alias+boto3+k8s")
HEAVY = ("boto3", "botocore", "kubernetes", "aiohttp", "prometheus_client", "pyroute2")


class PlainSidecar(Daemon):
    """Our daemon without a status socket: state from its JSON log."""

    kind = "vip-sidecar"
    events = SidecarNode.events
    transitions = SidecarNode.transitions

    def state(self) -> str | None:
        trans = self.transitions()
        return trans[-1][1] if trans else None

    def became_master(self, after: float) -> float | None:
        return SidecarNode.became(self, "MASTER", after)  # type: ignore[arg-type]

    def text(self) -> str:
        return self.proc.text()


def start_ours(
    topo: Topology, host: Host, shape: str, advskew: int, name: str, pyflags: tuple[str, ...] = ()
) -> PlainSidecar:
    args = [
        "run", "-i", host.ifname, "-s", host.ip, "-v", str(VHID), "-p", PASSWORD,
        "-a", topo.vip(), "-b", str(ADVBASE), "-k", str(advskew), "--provider", "alias",
        "--log-format", "json", "--facility", "none",
    ]  # fmt: skip
    env = {"PYTHONPATH": str(REPO)}
    if shape == "alias+http":
        args += ["--http", "127.0.0.1:9477"]
    if shape == "alias+boto3+k8s":
        argv = [sys.executable, *pyflags, "-c", PRELOAD, *args]
        env.update(PRELOAD_ENV)
    else:
        argv = [sys.executable, *pyflags, "-m", "vip_sidecar", *args]
    proc = Proc(host, argv, topo.workdir / f"{name}.log", env=env)
    topo.procs.append(proc)
    return PlainSidecar(proc, host)


def start(topo: Topology, kind: str, host: Host, advskew: int, name: str) -> Daemon:
    if kind.startswith("vip-sidecar"):
        shape = kind.split(" ", 1)[1].strip("()") if " " in kind else "alias"
        return start_ours(topo, host, shape, advskew, name)
    return start_daemon(topo, kind, host, vhid=VHID, vip=topo.vip(), advskew=advskew)


def clean(topo: Topology) -> None:
    for h in topo.hosts:
        h.run("ip", "addr", "del", f"{topo.vip()}/32", "dev", h.ifname, check=False)


def measure_pair(topo: Topology, kind: str, window: float) -> dict[str, Any]:
    h1, h2 = topo.hosts[:2]
    vip = topo.vip()
    clean(topo)
    daemons: list[Daemon] = []
    try:
        # both at once: the master's shorter dead interval makes it win
        master = start(topo, kind, h1, MASTER_SKEW, f"fp-m-{len(topo.procs)}")
        backup = start(topo, kind, h2, BACKUP_SKEW, f"fp-b-{len(topo.procs)}")
        daemons += [master, backup]
        wait_for(
            lambda: (
                master.state() == "MASTER"
                and backup.state() == "BACKUP"
                and h1.has_address(vip)
                and not h2.has_address(vip)
            ),
            25,
            what=f"{kind}: h1 master, h2 backup",
        )
        time.sleep(2.0)  # start-up work (imports, first adverts, GARPs) is over
        usage = measure_usage({"master": master.pids, "backup": backup.pids}, window)
        if master.state() != "MASTER" or backup.state() != "BACKUP":
            raise RuntimeError(f"{kind}: roles changed during the window")
        return {"ok": True, **{role: vars(u) for role, u in usage.items()}}
    except (AssertionError, RuntimeError) as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        for d in daemons:
            d.stop()


def imported_modules(topo: Topology) -> dict[str, bool]:
    """Run the alias-only daemon once with -X importtime and see what it imported."""
    h1 = topo.hosts[0]
    clean(topo)
    d = start_ours(topo, h1, "alias", MASTER_SKEW, "fp-importtime", ("-X", "importtime"))
    try:
        wait_for(lambda: d.state() == "MASTER" and h1.has_address(topo.vip()), 20, what="master")
        time.sleep(1.0)
        text = d.text()
    finally:
        d.stop()
    names = set(re.findall(r"^import time:.*\|\s+(\S+)\s*$", text, re.M))
    return {mod: any(n == mod or n.startswith(mod + ".") for n in names) for mod in HEAVY}


def report(results: dict[str, Any], loaded: dict[str, bool], window: float) -> None:
    print(f"\nIdle footprint over {window:g} s at advbase 1 (one VIP; sum over the process tree)")
    rows = []
    for kind, r in results.items():
        if not r["ok"]:
            rows.append([kind, "-", "FAILED", "", "", "", ""])
            continue
        for role in ("master", "backup"):
            u = r[role]
            rows.append(
                [
                    kind,
                    role,
                    u["nprocs"],
                    fmt(u["rss_kib"] / 1024, " MiB", 1),
                    fmt(u["pss_kib"] / 1024, " MiB", 1),
                    fmt(u["cpu_pct"], " %", 3),
                    fmt(u["cpu_pct"] * 36, " s/h", 2),
                ]
            )
    print(table(("daemon", "role", "procs", "RSS", "PSS", "CPU", "CPU time"), rows))
    print(
        "modules imported by the alias-only daemon: "
        + ", ".join(f"{m} {'YES' if v else 'no'}" for m, v in loaded.items())
    )
    items = []
    ours = results.get("vip-sidecar (alias)", {})
    for other in ("ucarp", "keepalived"):
        o = results.get(other, {})
        if not (ours.get("ok") and o.get("ok")):
            continue
        for role in ("master", "backup"):
            items += [
                (
                    f"vip-sidecar(alias)/{other} RSS {role}",
                    ratio(ours[role]["rss_kib"], o[role]["rss_kib"]),
                ),
                (
                    f"vip-sidecar(alias)/{other} CPU {role}",
                    ratio(ours[role]["cpu_pct"], o[role]["cpu_pct"]),
                ),
            ]
    heavy = results.get("vip-sidecar (alias+boto3+k8s)", {})
    if ours.get("ok") and heavy.get("ok"):
        items.append(
            (
                "vip-sidecar RSS with boto3+kubernetes / alias-only (master)",
                ratio(heavy["master"]["rss_kib"], ours["master"]["rss_kib"]),
            )
        )
    print_ratios("footprint", items)


IMPORT_SETS = (
    ("interpreter", ()),
    ("+ asyncio", ("asyncio",)),
    ("+ sidecar runtime, alias provider",
     ("asyncio", "vip_sidecar.cli", "vip_sidecar.runtime", "vip_sidecar.providers.alias")),
    ("+ aiohttp, prometheus_client (--http)",
     ("asyncio", "vip_sidecar.cli", "vip_sidecar.runtime", "vip_sidecar.providers.alias",
      "vip_sidecar.http",
      "vip_sidecar.metrics", "aiohttp", "prometheus_client")),
    ("+ boto3, kubernetes (aws, kubernetes providers)",
     ("asyncio", "vip_sidecar.cli", "vip_sidecar.runtime", "vip_sidecar.providers.alias", "boto3",
      "kubernetes.client", "vip_sidecar.providers.aws", "vip_sidecar.providers.kubernetes")),
)  # fmt: skip


def import_costs() -> list[tuple[str, int]]:
    """RSS (KiB) of a fresh interpreter after importing each cumulative set of modules."""
    out = []
    for label, mods in IMPORT_SETS:
        code = (
            "import importlib, sys\n"
            "for m in sys.argv[1:]: importlib.import_module(m)\n"
            "print([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1])"
        )
        res = subprocess.run(
            [sys.executable, "-c", code, *mods],
            capture_output=True,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO), **PRELOAD_ENV},
            timeout=60,
        )
        out.append((label, int(res.stdout.strip() or 0)))
    return out


def print_import_costs(costs: list[tuple[str, int]]) -> None:
    print("\nWhere the memory goes: RSS of a fresh interpreter after importing")
    rows, prev = [], 0
    for label, kib in costs:
        rows.append([label, fmt(kib / 1024, " MiB", 1), fmt((kib - prev) / 1024, " MiB", 1)])
        prev = kib if not label.startswith("+ aiohttp") else prev
    print(table(("imports", "RSS", "added"), rows))


def main(argv: list[str] | None = None) -> int:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--window", type=float, help="seconds of idle measurement (60; quick 4)")
    p.add_argument("--imports-only", action="store_true", help="only the import-cost table")
    args = p.parse_args(argv)
    window = args.window or (4.0 if args.quick else 60.0)
    costs = import_costs()
    if args.imports_only:
        print_import_costs(costs)
        return 0
    require_tools("ucarp", "keepalived")
    info = print_header(
        "footprint",
        [sys.executable, "-m", "bench.footprint", *(argv if argv is not None else sys.argv[1:])],
    )
    kinds = [f"vip-sidecar ({s})" for s in OURS_SHAPES] + ["ucarp", "keepalived"]
    results: dict[str, Any] = {}
    with bench_topology(2) as topo:
        loaded = imported_modules(topo)
        for kind in kinds:
            results[kind] = measure_pair(topo, kind, window)
            r = results[kind]
            shown = (
                f"master {r['master']['rss_kib'] / 1024:.1f} MiB {r['master']['cpu_pct']:.3f}% "
                f"backup {r['backup']['rss_kib'] / 1024:.1f} MiB {r['backup']['cpu_pct']:.3f}%"
                if r["ok"]
                else f"FAILED: {r['error']}"
            )
            print(f"  {kind}: {shown}", flush=True)
    report(results, loaded, window)
    print_import_costs(costs)
    write_json(
        args.json,
        {
            "machine": info,
            "window_s": window,
            "results": results,
            "imported": loaded,
            "import_costs": costs,
        },
    )
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
