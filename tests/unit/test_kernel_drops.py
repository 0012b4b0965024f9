"""Packets the kernel drops on a full receive buffer are a drop reason of their own."""

import os
import socket
from pathlib import Path

from tests.unit.fakes import FakeTransport
from vip_sidecar.config import build_config
from vip_sidecar.metrics import render
from vip_sidecar.runtime import Runtime
from vip_sidecar.transport import RCVBUF_BYTES, _size_receive_buffer


async def test_kernel_drops_are_counted_in_status_and_metrics():
    cfg = build_config({"interface": "kd0", "srcip": "10.99.0.2", "vhid": 3, "pass": "pw",
                        "addr": "10.99.0.100"})
    rt = Runtime(cfg, {}, transport_factory=FakeTransport, handle_signals=False)
    await rt.start()
    try:
        rt.transports["kd0"].kernel_drops = 4000  # what PACKET_STATISTICS reported
        rt._count_kernel_drops("kd0")
        rt.transports["kd0"].kernel_drops = 25
        rt._count_kernel_drops("kd0")
        rt._count_kernel_drops("kd0")  # read-and-reset: nothing new
        st = rt.status()
        assert st["interface_drops"]["kd0/kernel_rcvbuf"] == 4025
        assert st["receive_buffer_bytes"] == {"kd0": 2 << 20}
        text = render(rt).decode()
        sample = 'vip_sidecar_packets_dropped_total{interface="kd0",reason="kernel_rcvbuf",vip=""}'
        assert f"{sample} 4025.0" in text
    finally:
        await rt.shutdown()


def test_receive_buffer_is_sized_on_purpose():
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        default = s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        got = _size_receive_buffer(s)
    # with CAP_NET_ADMIN SO_RCVBUFFORCE passes rmem_max; the kernel doubles what it grants
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    wanted = 2 * RCVBUF_BYTES if os.geteuid() == 0 else min(2 * RCVBUF_BYTES, 2 * rmem_max)
    assert got == wanted and got > default
