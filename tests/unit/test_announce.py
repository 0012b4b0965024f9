"""announce.py: the one sender of gratuitous ARPs and IPv6 neighbour adverts (speaker and
alias provider), one socket per interface and family, opened again for a new ifindex."""

from ipaddress import IPv4Address, IPv6Address

from vip_sidecar import announce, carp, carp6

MAC = bytes.fromhex("02000000000a")


class RecordingSocket:
    def __init__(self, interface, index, version):
        self.opened = (interface, index, version)
        self.sent: list = []
        self.closed = False

    def send(self, data):
        self.sent.append((data, None))

    def sendto(self, data, address):
        self.sent.append((data, address))

    def close(self):
        self.closed = True


def test_garp_for_ipv4_na_for_ipv6_and_a_new_socket_for_a_new_index(monkeypatch):
    opened: list[RecordingSocket] = []
    index = {"eth0": 3}

    def fake_open(interface, idx, version):
        opened.append(RecordingSocket(interface, idx, version))
        return opened[-1]

    monkeypatch.setattr(announce, "_open", fake_open)
    monkeypatch.setattr(announce.socket, "if_nametoindex", lambda name: index[name])
    monkeypatch.setattr(announce, "_forwarding", lambda name: True)
    sender = announce.Announcer()
    v4, v6 = IPv4Address("10.0.0.100"), IPv6Address("fd00::100")
    for _ in range(2):
        sender.send("eth0", v4, MAC)
        sender.send("eth0", v6, MAC)
    # one socket per family, kept between bursts
    assert [s.opened for s in opened] == [("eth0", 3, 4), ("eth0", 3, 6)]
    garp, na = opened
    assert garp.sent == [(carp.encode_garp(MAC, v4), None)] * 2
    # to ff02::1 on the interface's index; R follows the interface's forwarding
    assert na.sent == [(carp6.encode_na(v6, MAC, router=True), ("ff02::1", 0, 0, 3))] * 2
    # the interface was re-created: the old socket is closed, a new one bound to it
    index["eth0"] = 9
    sender.send("eth0", v6, MAC)
    assert na.closed and not garp.closed and opened[-1].opened == ("eth0", 9, 6)


def test_log_names():
    assert announce.what(IPv4Address("10.0.0.1")) == "gratuitous ARP"
    assert announce.what(IPv6Address("fd00::1")) == "neighbour advertisement"
