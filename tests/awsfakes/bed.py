"""Shared set-up of the AWS integration tests: two hosts in namespaces, moto (behind the
fault injector) and the fake IMDS on the test process's bridge address, an EC2 world
whose instances have the hosts' IPs and MACs, and sidecar nodes configured with the aws
provider through a config file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_network
from typing import Any

from tests.awsfakes.imds import FakeImds
from tests.awsfakes.moto_server import FaultyMoto
from tests.awsfakes.world import World, seed
from tests.integration.harness import REPO, Host, SidecarNode, Topology, wait_for

ROUTE_VIP = "192.168.200.1"  # an overlay VIP lies outside every VPC CIDR
ROUTE_VIP6 = "fd00:200::1"  # the same for IPv6: outside the VPC's Amazon /56
CREDS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    # botocore must never wander off to a real 169.254.169.254
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED_ENV = ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL",
               "AWS_ENDPOINT_URL_EC2", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@dataclass
class AwsBed:
    topo: Topology
    moto: FaultyMoto
    imds: FakeImds
    world: World
    nodes: list[SidecarNode] = field(default_factory=list)
    ipv6: bool = False  # the VIP is IPv6 (a dual-stack bed; EC2 reached over IPv4)

    @property
    def hosts(self) -> list[Host]:
        return self.topo.hosts

    def vip(self, mode: str) -> str:
        if self.ipv6:
            subnet = ip_network(self.world.subnet_ipv6_cidr)
            return ROUTE_VIP6 if mode == "route" else str(subnet[0x100])
        return ROUTE_VIP if mode == "route" else self.topo.vip(100)

    def srcip(self, i: int) -> str:
        return self.hosts[i].ip6 if self.ipv6 else self.hosts[i].ip

    def options(self, mode: str, **extra: Any) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "name": "aws",
            "mode": mode,
            "endpoint_url": self.moto.url,
            "imds_endpoint": self.imds.url,
            "reassert_interval": 2,
            "drift_confirm": 1.5,
            "timeout": 15,
            "verify_timeout": 10,
            # one attempt per call: (1 + 5) x 1 fits verify_timeout; our loop retries
            "connect_timeout": 1,
            "read_timeout": 5,
            "max_attempts": 1,
        }
        if mode == "secondary-ip" and not self.moto.injector.aws_semantics:
            opts["emulator_compat"] = True  # raw moto keeps both listings
        if mode == "route":
            opts["route_table_ids"] = self.world.route_tables
        if mode == "eip":
            opts["allocation_id"] = self.world.allocation_id
        opts.update(extra)
        return opts

    def config_file(self, name: str, opts: dict[str, Any]) -> str:
        path = self.topo.workdir / f"{name}.json"
        path.write_text(json.dumps({"providers": [opts]}))
        return str(path)

    def start(self, i: int, mode: str, advskew: int, name: str | None = None,
              **extra: Any) -> SidecarNode:
        name = name or f"node{i}-{len(self.topo.procs)}"
        cfg = self.config_file(name, self.options(mode, **extra))
        node = self.topo.sidecar(
            self.hosts[i], "-v", "9", "-p", "secret", "-a", self.vip(mode), "-k", str(advskew),
            "--config", cfg, name=name, env={**CREDS, "NODE_NAME": f"node{i}"},
            srcip=self.srcip(i),
        )
        self.nodes.append(node)
        # the next node starts only once this one runs its election (status socket up): two
        # daemons importing boto3 side by side under load can finish in either order, and a
        # node with a higher advskew that comes up first keeps the VIP (no preempt)
        wait_for(lambda: node.status() is not None or node.popen.poll() is not None, 30,
                 what=f"{name} running or exited")
        return node

    def check_cli(self, i: int, mode: str, **extra: Any) -> subprocess.CompletedProcess[str]:
        """`vip-sidecar check --provider aws` inside host i's namespace."""
        cfg = self.config_file(f"check{i}-{time.monotonic_ns()}", self.options(mode, **extra))
        host = self.hosts[i]
        env = {**os.environ, **CREDS, "PYTHONPATH": str(REPO)}
        argv = ["ip", "netns", "exec", host.ns, sys.executable, "-m", "vip_sidecar", "check",
                "--provider", "aws", "-i", host.ifname, "-s", self.srcip(i), "-v", "9",
                "-p", "secret", "-a", self.vip(mode), "--config", cfg]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)

    # -- EC2 state as the tests read it ---------------------------------------------------
    def owner(self, mode: str) -> str | None:
        """The single ENI the VIP points at, 'split:...' when it points at several, or None."""
        vip = self.vip(mode)
        if mode == "secondary-ip":
            holders = (self.world.ipv6_holders if self.ipv6 else self.world.secondary_holders)(vip)
        elif mode == "eip":
            target = self.world.eip_target()
            holders = [target] if target else []
        else:
            targets = list(self.world.route_targets(vip).values())
            if len(set(targets)) > 1:
                return "split:" + ",".join(str(t) for t in targets)
            holders = [targets[0]] if targets and targets[0] else []
        if not holders:
            return None
        if len(holders) > 1:
            return "split:" + ",".join(holders)
        return holders[0]

    def eni(self, i: int) -> str:
        return self.world.nodes[i].eni_id

    def fence_resource(self, mode: str, i: int) -> list[str]:
        if mode == "secondary-ip":
            return [self.eni(i)]
        if mode == "eip":
            return [self.world.allocation_id]
        return list(self.world.route_tables)

    def epoch(self, mode: str, i: int) -> tuple[int, str | None]:
        """The highest fencing epoch (and its holder) on the resources of `mode`."""
        vip = self.vip(mode)
        best: tuple[int, str | None] = (0, None)
        for res in self.fence_resource(mode, i):
            value = self.world.tags(res).get(f"vip-sidecar/{vip}")
            if value is None:
                continue
            epoch, _, holder = value.partition(":")
            best = max(best, (int(epoch), holder), key=lambda c: (c[0], c[1] or ""))
        return best


def events(node: SidecarNode, kind: str) -> list[dict[str, Any]]:
    return [e for e in node.events() if e.get("event") == kind]


def wait_owner(bed: AwsBed, mode: str, eni: str, timeout: float) -> float:
    """Wait until EC2 shows the VIP on exactly `eni`; returns the wall time seen."""
    wait_for(lambda: bed.owner(mode) == eni, timeout, interval=0.05,
             what=f"EC2 {mode} pointing at {eni} only (now {bed.owner(mode)})")
    return time.time()


def make_bed(topo_factory: Callable[..., Topology], route_tables: int = 2,
             ipv6: bool = False) -> AwsBed:
    """ipv6: dual-stack hosts, an IPv6 VPC/subnet, and the VIP from it (AwsBed.vip)."""
    topo = topo_factory(2, family="dual") if ipv6 else topo_factory(2)
    root = topo.attach_root()
    moto = FaultyMoto(root)
    imds = FakeImds(root)
    try:
        moto.reset()
        world = seed(moto.client(), [h.ip for h in topo.hosts], [h.mac for h in topo.hosts],
                     vpc_cidr=f"10.{topo.net}.0.0/16", subnet_cidr=f"10.{topo.net}.0.0/24",
                     route_tables=route_tables, ipv6=ipv6)
        world.publish(imds, [h.ip for h in topo.hosts])
    except Exception:
        moto.stop()
        imds.stop()
        raise
    return AwsBed(topo, moto, imds, world, ipv6=ipv6)
