"""The in-process AWS test bed: moto (behind the fault wrapper) and the fake IMDS on
loopback, and a freshly seeded EC2 world per test (no namespaces or root needed)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tests.awsfakes import forget_clients
from tests.awsfakes.imds import FakeImds
from tests.awsfakes.moto_server import FaultyMoto
from tests.awsfakes.world import World, seed
from vip_sidecar.config import build_config
from vip_sidecar.providers.aws.provider import AwsProvider, create
from vip_sidecar.providers.base import VipContext


def loopback_servers() -> Iterator[tuple[FaultyMoto, FakeImds]]:
    """A module fixture's body: both servers for the module, stopped at its end."""
    moto = FaultyMoto("127.0.0.1")
    imds = FakeImds("127.0.0.1")
    yield moto, imds
    moto.stop()
    imds.stop()


def fresh_world(moto: FaultyMoto, imds: FakeImds, monkeypatch: Any, net: str,
                macs: list[str], **seed_kw: Any) -> World:
    """Reset moto, IMDS and the shared EC2 clients; seed hosts {net}.0.1 and .2."""
    for var in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    moto.reset()
    moto.injector.aws_semantics = False
    imds.hang_put = False
    imds.revoke_tokens()
    forget_clients()
    world = seed(moto.client(), [f"{net}.0.1", f"{net}.0.2"], macs,
                 vpc_cidr=f"{net}.0.0/16", subnet_cidr=f"{net}.0.0/24", **seed_kw)
    imds.local_ipv4s_from = world.local_ipv4s
    imds.ipv6s_from = world.ipv6s
    return world


def loopback_provider(servers: tuple[FaultyMoto, FakeImds], world: World, i: int, vip: str,
                      macs: list[str], srcip: str, mode: str = "secondary-ip",
                      **opts: Any) -> AwsProvider:
    """An aws provider for node i of `world`, built through the real config path."""
    moto, imds = servers
    # both nodes share the loopback address: IMDS answers for the node under test
    imds.default = world.imds_instance(world.nodes[i])
    # raw moto keeps reassigned addresses on both ENIs: the emulator mode removes them
    # (off when the wrapper plays EC2's semantics); a short drift_confirm keeps the check
    # tests fast (it is real time here)
    options = {"name": "aws", "mode": mode, "endpoint_url": moto.url,
               "imds_endpoint": imds.url, "mac": macs[i], "drift_confirm": 0.2,
               "emulator_compat": not moto.injector.aws_semantics, **opts}
    cfg = build_config({"interface": "lo", "srcip": srcip, "vhid": 3,
                        "pass": "pw", "addr": vip, "providers": [options]})
    p = create(cfg.vips[0].providers[0], cfg.vips[0], cfg)
    assert isinstance(p, AwsProvider)
    return p


def ctx(p: AwsProvider, node: str) -> VipContext:
    return VipContext(p.vip, node)
