"""Test doubles for the AWS provider: moto's EC2 server behind a fault-injecting WSGI
wrapper, a token-checking IMDSv2 server, and helpers to seed an EC2 world."""

from vip_sidecar.providers.aws import api as _api


def forget_clients() -> None:
    """Drop the process-wide EC2 clients (each test builds its own endpoint)."""
    with _api._CLIENTS_LOCK:
        _api._CLIENTS.clear()
