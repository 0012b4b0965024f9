"""Providers that are not configured are never imported (footprint: boto3 and the
kubernetes client cost tens of MB)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from vip_sidecar import cli
from vip_sidecar.config import build_config
from vip_sidecar.runtime import build_providers, Runtime
cfg = build_config({"interface": "lo", "srcip": "10.0.0.2", "vhid": 1, "pass": "x",
                    "addr": "10.0.0.9", "providers": %r})
build_providers(cfg)
heavy = sorted(m for m in ("boto3", "botocore", "kubernetes", "prometheus_client", "aiohttp")
               if m in sys.modules)
print(",".join(heavy))
"""


def loaded(providers):
    out = subprocess.run(
        [sys.executable, "-c", PROBE % (providers,)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_alias_and_script_only_load_nothing_heavy():
    assert loaded(["alias", "script"]) == ""


def test_configuring_aws_does_not_pull_in_the_kubernetes_client():
    mods = loaded(
        [
            "alias",
            {
                "name": "aws",
                "mode": "eip",
                "allocation_id": "eipalloc-0123456789abcdef0",
                "region": "eu-west-1",
                "instance_id": "i-0123456789abcdef0",
                "eni_id": "eni-0123456789abcdef0",
            },
        ]
    )
    assert "kubernetes" not in mods.split(",")
