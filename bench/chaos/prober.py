"""The ARP prober, run inside the prober namespace: `python -m bench.chaos.prober IFNAME
SRC_IP VIP OUT [PERIOD]`.

Every PERIOD (10 ms) it broadcasts "who has VIP, tell SRC_IP" on a raw AF_PACKET socket
and writes one line per slot to OUT: `<unix time of the request> <mac>,<mac>...` with
every MAC that answered before the next request (an empty list: nobody answered).
Gratuitous ARPs (not addressed to SRC_IP) are not answers and are ignored. Runs until
SIGTERM/SIGINT; a late slot is skipped, never bunched up.
"""

from __future__ import annotations

import contextlib
import select
import signal
import socket
import sys
import time
from pathlib import Path

ETH_P_ARP = 0x0806


def request_frame(mac: bytes, src: bytes, vip: bytes) -> bytes:
    eth = b"\xff" * 6 + mac + ETH_P_ARP.to_bytes(2, "big")
    arp = b"\x00\x01\x08\x00\x06\x04\x00\x01" + mac + src + b"\x00" * 6 + vip
    return eth + arp


def answer_mac(frame: bytes, src: bytes, vip: bytes) -> str | None:
    """The sender MAC of an ARP reply "VIP is at <mac>" addressed to us, else None."""
    if len(frame) < 42 or frame[12:14] != ETH_P_ARP.to_bytes(2, "big"):
        return None
    arp = frame[14:42]
    if arp[6:8] != b"\x00\x02" or arp[14:18] != vip or arp[24:28] != src:
        return None
    return arp[8:14].hex(":")


def read_record(path: Path) -> list[tuple[float, list[str]]]:
    """The slots written by main(): (request time, MACs that answered)."""
    out = []
    with contextlib.suppress(OSError), path.open() as fh:
        for line in fh:
            ts, _, macs = line.rstrip("\n").partition(" ")
            try:
                t = float(ts)
            except ValueError:
                continue
            out.append((t, [m for m in macs.split(",") if m]))
    return out


def main(argv: list[str]) -> int:
    ifname, src_ip, vip_ip, out = argv[:4]
    period = float(argv[4]) if len(argv) > 4 else 0.01
    mac = bytes.fromhex(
        Path(f"/sys/class/net/{ifname}/address").read_text().strip().replace(":", "")
    )
    src, vip = socket.inet_aton(src_ip), socket.inet_aton(vip_ip)
    frame = request_frame(mac, src, vip)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    sock.bind((ifname, 0))
    running = [True]

    def stop(signum: int, frame: object) -> None:
        running[0] = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with open(out, "w", buffering=1 << 16) as fh:
        last_flush = time.monotonic()
        nxt = time.monotonic()
        while running[0]:
            sent_at = time.time()
            sock.send(frame)
            answers: set[str] = set()
            nxt += period
            now = time.monotonic()
            if nxt < now:  # late (not scheduled in time): skip the lost slots
                nxt = now + period
            while (left := nxt - time.monotonic()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                data, addr = sock.recvfrom(128)
                if addr[2] != socket.PACKET_OUTGOING and (who := answer_mac(data, src, vip)):
                    answers.add(who)
            fh.write(f"{sent_at:.4f} {','.join(sorted(answers))}\n")
            if now - last_flush > 0.5:
                fh.flush()
                last_flush = now
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
