"""The network as the webhook address checks see it, for tests: the operator's allowed
networks, and names that resolve where a test says. Every lookup goes through
socket.getaddrinfo, which `fake_dns` replaces for the names under `.test` (RFC 2606: never
real) and records."""

from __future__ import annotations

import socket
from ipaddress import ip_address, ip_network
from typing import Any

import pytest

from orchestrator.settings import get_settings

_real_getaddrinfo = socket.getaddrinfo


def allow_networks(monkeypatch: pytest.MonkeyPatch, *networks: str) -> None:
    """RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS for this test; none given: the default (none)."""
    allowed = [ip_network(n) for n in networks]
    monkeypatch.setattr(get_settings(), "webhook_allowed_networks", allowed)


class FakeDns:
    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {}
        self.lookups: list[str] = []

    def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not name.endswith(".test"):
            return _real_getaddrinfo(host, port, *args, **kwargs)
        self.lookups.append(name)
        if not self.names.get(name):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        found = []
        for address in self.names[name]:
            if ip_address(address).version == 6:
                found.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0)))
            else:
                found.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)))
        return found


def install_fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    """Names under `.test` resolve as the returned FakeDns says, for this test."""
    dns = FakeDns()
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns
