"""The netns test bed (testbed.harness) as the integration tests use it, plus their
pytest skip marks."""

from __future__ import annotations

import shutil

import pytest

from testbed.harness import (
    REPO,
    Host,
    Proc,
    SidecarNode,
    Sniffer,
    Topology,
    UcarpNode,
    free_port,
    have_netns,
    inject_frame,
    ping_until_reply,
    sh,
    wait_for,
)

__all__ = [
    "NETNS",
    "REPO",
    "UCARP",
    "Host",
    "Proc",
    "SidecarNode",
    "Sniffer",
    "Topology",
    "UcarpNode",
    "free_port",
    "inject_frame",
    "ping_until_reply",
    "sh",
    "wait_for",
]

NETNS = pytest.mark.skipif(not have_netns(), reason="needs root and network namespaces")
UCARP = pytest.mark.skipif(shutil.which("ucarp") is None, reason="needs the ucarp binary")
