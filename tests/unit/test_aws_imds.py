"""The IMDSv2 client with a scripted transport and fake time: token caching and renewal,
one refetch on 401, timeouts (the hop-limit symptom), 404s, retries."""

from __future__ import annotations

import pytest

from vip_sidecar.providers.aws.imds import (
    TOKEN_HEADER,
    TOKEN_TTL_HEADER,
    ImdsClient,
    ImdsError,
    ImdsNotFound,
    ImdsTokenTimeout,
    interface_mac,
)


class Script:
    """Answers by (method, path); a list of answers is consumed one per request."""

    def __init__(self, answers):
        self.answers = {k: list(v) if isinstance(v, list) else v for k, v in answers.items()}
        self.requests: list[tuple[str, str, dict[str, str], float]] = []

    def __call__(self, method, url, headers, timeout):
        path = url.split("/latest/", 1)[1]
        self.requests.append((method, path, dict(headers), timeout))
        answer = self.answers.get((method, path), (404, b""))
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def count(self, method):
        return sum(1 for r in self.requests if r[0] == method)


class Time:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.slept.append(s)
        self.now += s


def client(script, **kw) -> tuple[ImdsClient, Time]:
    t = Time()
    return ImdsClient(endpoint="http://imds/", transport=script, clock=t, sleep=t.sleep,
                      **kw), t


TOKEN = ("PUT", "api/token")


def test_token_is_fetched_once_and_sent_on_every_get():
    s = Script({TOKEN: (200, b"t1\n"), ("GET", "meta-data/instance-id"): (200, b"i-1")})
    c, _ = client(s, token_ttl=600, timeout=0.7)
    assert [c.instance_id() for _ in range(3)] == ["i-1"] * 3
    assert s.count("PUT") == 1
    put = s.requests[0]
    assert put[2] == {TOKEN_TTL_HEADER: "600"} and put[3] == 0.7
    assert all(r[2] == {TOKEN_HEADER: "t1"} for r in s.requests[1:])


def test_token_is_renewed_before_it_expires():
    s = Script({TOKEN: [(200, b"t1"), (200, b"t2")], ("GET", "meta-data/instance-id"):
                (200, b"i-1")})
    c, t = client(s, token_ttl=600)
    c.instance_id()
    t.now = 600 - 59  # within the renewal margin (ttl/10 = 60 s)
    c.instance_id()
    assert s.count("PUT") == 2 and s.requests[-1][2] == {TOKEN_HEADER: "t2"}


def test_a_401_refetches_the_token_once():
    s = Script({TOKEN: [(200, b"old"), (200, b"new")],
                ("GET", "meta-data/instance-id"): [(401, b""), (200, b"i-1")]})
    c, _ = client(s)
    assert c.instance_id() == "i-1"
    assert s.count("PUT") == 2 and c.stats.token_refetches_on_401 == 1


def test_a_second_401_is_an_error_not_a_loop():
    s = Script({TOKEN: (200, b"t"), ("GET", "meta-data/instance-id"): (401, b"")})
    c, _ = client(s)
    with pytest.raises(ImdsError, match="HTTP 401"):
        c.instance_id()
    assert s.count("PUT") == 2 and s.count("GET") == 2


def test_token_put_timeouts_are_reported_as_the_hop_limit():
    s = Script({TOKEN: TimeoutError("timed out")})
    c, t = client(s, attempts=3, timeout=1.0, backoff_s=0.2)
    with pytest.raises(ImdsTokenTimeout, match="hop limit"):
        c.instance_id()
    assert s.count("PUT") == 3 and s.count("GET") == 0
    assert t.slept == [0.2, 0.4]


def test_imds_v2_disabled_is_not_a_hop_limit_problem():
    s = Script({TOKEN: (403, b"Forbidden")})
    c, _ = client(s)
    with pytest.raises(ImdsError, match="HTTP 403") as exc:
        c.token()
    assert not isinstance(exc.value, ImdsTokenTimeout) and s.count("PUT") == 1


def test_get_timeouts_and_5xx_are_retried():
    s = Script({TOKEN: (200, b"t"), ("GET", "meta-data/instance-id"):
                [TimeoutError(), (500, b""), (200, b"i-1")]})
    c, t = client(s, attempts=3)
    assert c.instance_id() == "i-1" and len(t.slept) == 2


def test_404_is_not_found_and_not_retried():
    s = Script({TOKEN: (200, b"t")})
    c, _ = client(s)
    with pytest.raises(ImdsNotFound):
        c.get("meta-data/nothing")
    assert c.get_optional("meta-data/nothing") is None
    assert s.count("GET") == 2


def test_region_falls_back_to_the_availability_zone():
    s = Script({TOKEN: (200, b"t"), ("GET", "meta-data/placement/availability-zone"):
                (200, b"ap-southeast-2b")})
    c, _ = client(s)
    assert c.region() == "ap-southeast-2"


def test_interface_by_mac(tmp_path):
    mac = "0a:1b:2c:3d:4e:5f"
    base = f"meta-data/network/interfaces/macs/{mac}/"
    s = Script({TOKEN: (200, b"t"), ("GET", base + "interface-id"): (200, b"eni-1"),
                ("GET", base + "subnet-id"): (200, b"subnet-1")})
    c, _ = client(s)
    info = c.interface(mac.upper())
    assert info["interface-id"] == "eni-1" and info["subnet-id"] == "subnet-1"
    assert info["vpc-id"] is None
    with pytest.raises(ImdsNotFound, match="no ENI with MAC"):
        c.interface("00:00:00:00:00:01")
    (tmp_path / "eth9").mkdir()
    (tmp_path / "eth9" / "address").write_text("0A:1B:2C:3D:4E:5F\n")
    assert interface_mac("eth9", str(tmp_path)) == mac
    with pytest.raises(ImdsError, match="cannot read the MAC"):
        interface_mac("nope", str(tmp_path))
