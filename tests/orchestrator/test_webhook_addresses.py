"""Webhooks never reach into the service's own networks: refused when created where the URL
can only lead there, and refused before each send wherever its name resolves by then."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.errors import InvalidRequest
from orchestrator.settings import Settings
from orchestrator.webhook_addresses import Undeliverable, check_new_url, send_address
from tests.webhook_network import FakeDns, allow_networks, install_fake_dns

REFUSED = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("169.254.169.254", "link-local"),
    ("10.0.0.5", "private network"),
    ("172.16.3.4", "private network"),
    ("192.168.1.1", "private network"),
    ("100.64.1.1", "carrier-grade NAT"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fd00::1", "private network"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "link-local"),
    ("64:ff9b::a00:5", "private network"),  # NAT64 of 10.0.0.5
    ("2002:a00:5::1", "private network"),  # 6to4 of 10.0.0.5
]
PUBLIC = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "::ffff:93.184.216.34"]


def url_of(address: str, port: int = 8080) -> str:
    host = f"[{address}]" if ":" in address else address
    return f"http://{host}:{port}/hook"


@pytest.fixture(autouse=True)
def strict(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default: no network allowed, whatever the test environment allows."""
    allow_networks(monkeypatch)


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    return install_fake_dns(monkeypatch)


@pytest.mark.parametrize(("address", "why"), REFUSED)
def test_an_internal_address_is_refused_at_create_naming_url_and_why(
    address: str, why: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        check_new_url(url_of(address))
    assert refused.value.param == "url"
    assert why in refused.value.message
    assert "RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS" in refused.value.message


@pytest.mark.parametrize("address", PUBLIC)
def test_a_public_address_is_accepted(address: str) -> None:
    check_new_url(url_of(address))
    assert send_address(address, 443) == ip_address(address)


def test_an_allowed_network_admits_its_addresses_and_no_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    allow_networks(monkeypatch, "127.0.0.0/8", "10.1.0.0/16")
    for address in ("127.0.0.1", "::ffff:127.0.0.1", "10.1.2.3"):
        check_new_url(url_of(address))
    for address in ("10.2.0.1", "::1", "169.254.169.254"):
        with pytest.raises(InvalidRequest):
            check_new_url(url_of(address))


def test_a_name_is_refused_at_create_when_it_resolves_to_an_internal_address(
    fake_dns: FakeDns,
) -> None:
    fake_dns.names["db.test"] = ["10.0.0.5"]
    fake_dns.names["mixed.test"] = ["93.184.216.34", "127.0.0.1"]
    fake_dns.names["v6.test"] = ["::1"]
    fake_dns.names["public.test"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    for name, why in (
        ("db.test", "10.0.0.5, which is in a private network"),
        ("mixed.test", "127.0.0.1, which is a loopback address"),
        ("v6.test", "::1, which is a loopback address"),
    ):
        with pytest.raises(InvalidRequest) as refused:
            check_new_url(f"https://{name}/hook")
        assert refused.value.param == "url"
        assert f"{name} resolves to {why}" in refused.value.message
    check_new_url("https://public.test/hook")
    # Not resolving now is no reason to refuse: it is checked again before every send.
    check_new_url("https://later.test/hook")
    assert "later.test" in fake_dns.lookups


def test_a_send_is_refused_when_any_address_of_the_name_is_internal(fake_dns: FakeDns) -> None:
    fake_dns.names["hook.test"] = ["93.184.216.34", "10.0.0.5"]
    with pytest.raises(Undeliverable, match=r"10\.0\.0\.5 \(of hook\.test\) is in a private"):
        send_address("hook.test", 443)
    with pytest.raises(Undeliverable, match="does not resolve"):
        send_address("gone.test", 443)
    with pytest.raises(Undeliverable, match=r"address 169\.254\.169\.254 is link-local"):
        send_address("169.254.169.254", 80)


def test_a_send_goes_to_the_first_checked_address(fake_dns: FakeDns) -> None:
    fake_dns.names["hook.test"] = ["93.184.216.35", "93.184.216.34"]
    assert str(send_address("hook.test", 443)) == "93.184.216.35"


def test_the_allowed_networks_setting_is_a_comma_separated_list_of_cidrs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file of the machine's
    monkeypatch.setenv("RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8, fd00::/8,10.0.0.5")
    allowed = [str(n) for n in Settings().webhook_allowed_networks]
    assert allowed == ["127.0.0.0/8", "fd00::/8", "10.0.0.5/32"]
    monkeypatch.setenv("RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS", "")
    assert Settings().webhook_allowed_networks == []
    monkeypatch.setenv("RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS", "10.0.0.1/8")
    with pytest.raises(ValidationError, match="webhook_allowed_networks"):
        Settings()
