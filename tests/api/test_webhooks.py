"""Webhooks: a job's events reach a real receiver, signed; failures are retried and every
attempt is visible; a tenant sees only its own webhooks."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator import dispatch
from orchestrator.models import utcnow
from orchestrator.settings import get_settings
from orchestrator.webhooks import MAX_ATTEMPTS, retry_delay
from services.api.main import create_app
from services.api.webhook_sender import deliver_due
from tests.api.tls_certs import server_certificate
from tests.api.webhook_receiver import Receiver, receiver
from tests.factories import dataset_zip, new_api_key
from tests.webhook_network import FakeDns, allow_networks, install_fake_dns


def submit_job(client: TestClient) -> str:
    upload = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
    assert upload.status_code == 201, upload.text
    job = client.post("/v1/jobs", json={"dataset_id": upload.json()["id"], "base_model": "tiny"})
    assert job.status_code == 201, job.text
    return str(job.json()["id"])


def add_webhook(client: TestClient, hook: Receiver, **fields: Any) -> str:
    response = client.post("/v1/webhooks", json={"url": hook.url, **fields})
    assert response.status_code == 201, response.text
    created = response.json()
    hook.secret = created["secret"]
    return str(created["id"])


def deliveries(client: TestClient, webhook_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/webhooks/{webhook_id}/deliveries")
    assert response.status_code == 200, response.text
    listed: list[dict[str, Any]] = response.json()
    return listed


def later(delay: timedelta) -> Any:
    """A clock that far ahead, for the retry that delay schedules."""
    return lambda: utcnow() + delay + timedelta(seconds=1)


@pytest.fixture
def delivering_client(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[TestClient]:
    """An API whose own deliverer loop runs (the other tests run its rounds themselves)."""
    monkeypatch.setenv("RELAYTUNE_WEBHOOK_INTERVAL_SECONDS", "0.2")
    get_settings.cache_clear()
    with TestClient(create_app()) as test_client:
        test_client.headers["Authorization"] = f"Bearer {new_api_key()}"
        yield test_client
    get_settings.cache_clear()


def test_a_jobs_events_reach_the_receiver_signed(delivering_client: TestClient) -> None:
    client = delivering_client
    with receiver() as hook:
        webhook_id = add_webhook(client, hook)
        job_id = submit_job(client)
        calls = hook.wait_for(2)  # job_submitted, phase_queued: sent by the API's loop

        assert all(c.verified for c in calls)
        assert {c.event["type"] for c in calls} == {"job_submitted", "phase_queued"}
        assert all(c.event["job_id"] == job_id for c in calls)
        assert all(c.event_id_header == str(c.event["id"]) for c in calls)
        listed = client.get(f"/v1/jobs/{job_id}/events").json()
        assert sorted((c.event for c in calls), key=lambda e: e["id"]) == [
            {**e, "job_id": job_id} for e in listed
        ]
        for delivery in deliveries(client, webhook_id):
            assert delivery["status"] == "delivered"
            assert [a["status_code"] for a in delivery["attempts"]] == [200]


def test_a_receiver_answering_500_then_200_shows_two_attempts(client: TestClient) -> None:
    with receiver(500) as hook:
        webhook_id = add_webhook(client, hook, event_types=["job_submitted"])
        submit_job(client)

        assert deliver_due() == 1
        [pending] = deliveries(client, webhook_id)
        assert pending["status"] == "pending"
        [failed] = pending["attempts"]
        assert (failed["attempt"], failed["status_code"]) == (1, 500)
        assert "500" in failed["error"]
        assert failed["next_attempt_at"] == pending["next_attempt_at"] is not None
        assert deliver_due() == 0  # the retry is not due yet

        assert deliver_due(later(retry_delay(1))) == 1
        [delivered] = deliveries(client, webhook_id)
        assert delivered["status"] == "delivered"
        assert delivered["delivered_at"] is not None and delivered["next_attempt_at"] is None
        assert [(a["attempt"], a["status_code"]) for a in delivered["attempts"]] == [
            (1, 500),
            (2, 200),
        ]
        calls = hook.wait_for(2)
        assert [c.verified for c in calls] == [True, True]
        assert calls[0].event_id_header == calls[1].event_id_header


def test_a_delivery_is_given_up_after_its_last_attempt(client: TestClient) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: each attempt is refused
    created = client.post(
        "/v1/webhooks",
        json={"url": f"http://127.0.0.1:{port}/hook", "event_types": ["job_submitted"]},
    )
    webhook_id = created.json()["id"]
    submit_job(client)

    ahead = timedelta()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert deliver_due(later(ahead)) == 1
        ahead += retry_delay(attempt) + timedelta(seconds=1)
    assert deliver_due(later(timedelta(days=30))) == 0
    [given_up] = deliveries(client, webhook_id)
    assert given_up["status"] == "failed" and given_up["next_attempt_at"] is None
    assert [a["attempt"] for a in given_up["attempts"]] == list(range(1, MAX_ATTEMPTS + 1))
    assert all(a["status_code"] is None and "Connect" in a["error"] for a in given_up["attempts"])


def test_a_job_webhook_gets_only_that_jobs_events_of_the_chosen_types(client: TestClient) -> None:
    watched, other = submit_job(client), submit_job(client)
    with receiver() as hook:
        add_webhook(client, hook, job_id=watched, event_types=["cancel_requested", "job_cancelled"])
        for job_id in (watched, other):
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        assert deliver_due() == 2
        calls = hook.wait_for(2)
    assert sorted(c.event["type"] for c in calls) == ["cancel_requested", "job_cancelled"]
    assert {c.event["job_id"] for c in calls} == {watched}


def test_a_tenant_sees_and_removes_only_its_own_webhooks(client: TestClient) -> None:
    job_id = submit_job(client)
    created = client.post("/v1/webhooks", json={"url": "https://example.com/hook"})
    assert created.status_code == 201
    webhook = created.json()
    assert webhook["secret"].startswith("whsec_")
    listed = client.get("/v1/webhooks").json()
    assert [w["id"] for w in listed] == [webhook["id"]] and "secret" not in listed[0]

    beta = {"Authorization": f"Bearer {new_api_key('beta')}"}
    assert client.get("/v1/webhooks", headers=beta).json() == []
    for method, path in (
        ("DELETE", f"/v1/webhooks/{webhook['id']}"),
        ("GET", f"/v1/webhooks/{webhook['id']}/deliveries"),
    ):
        response = client.request(method, path, headers=beta)
        assert response.status_code == 404
        assert response.json()["error"]["param"] == "webhook_id"
    foreign_job = client.post(
        "/v1/webhooks", json={"url": "https://example.com/h", "job_id": job_id}, headers=beta
    )
    assert foreign_job.status_code == 404
    assert foreign_job.json()["error"]["param"] == "job_id"

    assert client.delete(f"/v1/webhooks/{webhook['id']}").status_code == 204
    assert client.get("/v1/webhooks").json() == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"url": "ftp://example.com/hook"}, "url"),
        ({"url": "file:///etc/passwd"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "https://example.com/h", "event_types": ["job_exploded"]}, "event_types.0"),
        ({"url": "https://example.com/h", "event_types": []}, "event_types"),
        ({"url": "https://example.com/h", "secret": "mine"}, "secret"),
    ],
)
def test_a_bad_webhook_is_refused_naming_the_field(
    client: TestClient, body: dict[str, Any], param: str
) -> None:
    response = client.post("/v1/webhooks", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param
    assert client.get("/v1/webhooks").json() == []


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    return install_fake_dns(monkeypatch)


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every TCP connection the deliverer opens, by the address it connects to."""
    opened: list[tuple[str, int]] = []
    real = socket.create_connection

    def create_connection(address: tuple[str, int], *args: Any, **kwargs: Any) -> socket.socket:
        opened.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", create_connection)
    return opened


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:5432/", "127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is link-local"),
        ("http://10.0.0.5/", "10.0.0.5 is in a private network"),
        ("http://[::1]:6379/", "::1 is a loopback address"),
        ("http://[::ffff:7f00:1]/", "(IPv4 127.0.0.1) is a loopback address"),
        ("http://2130706433/", "127.0.0.1 is a loopback address"),  # 127.0.0.1 as one number
        ("http://localhost:5432/", "localhost resolves to"),
    ],
)
def test_a_webhook_into_the_services_own_network_is_refused_naming_url(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, url: str, why: str
) -> None:
    allow_networks(monkeypatch)  # the default, stricter than the tests' environment
    response = client.post("/v1/webhooks", json={"url": url})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "url"
    assert why in error["message"]
    assert client.get("/v1/webhooks").json() == []

    public = client.post("/v1/webhooks", json={"url": "http://93.184.216.34/hook"})
    assert public.status_code == 201, public.text


def test_a_name_that_resolves_inside_by_send_time_is_refused_without_connecting(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    fake_dns: FakeDns,
    connections: list[tuple[str, int]],
) -> None:
    allow_networks(monkeypatch)
    fake_dns.names["hooks.test"] = ["93.184.216.34"]
    created = client.post(
        "/v1/webhooks", json={"url": "https://hooks.test/h", "event_types": ["job_submitted"]}
    )
    assert created.status_code == 201, created.text
    fake_dns.names["hooks.test"] = ["93.184.216.34", "10.0.0.5"]  # rebound
    submit_job(client)

    ahead = timedelta()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert deliver_due(later(ahead)) == 1
        ahead += retry_delay(attempt) + timedelta(seconds=1)
    [given_up] = deliveries(client, created.json()["id"])
    assert given_up["status"] == "failed"
    assert [a["attempt"] for a in given_up["attempts"]] == list(range(1, MAX_ATTEMPTS + 1))
    for failed in given_up["attempts"]:
        assert failed["status_code"] is None
        assert failed["error"] == (
            "the webhook's address 10.0.0.5 (of hooks.test) is in a private network; refused"
        )
    assert connections == []


def test_a_name_is_sent_to_the_address_checked_with_its_own_host_and_tls_name(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    fake_dns: FakeDns,
    connections: list[tuple[str, int]],
) -> None:
    certificate = server_certificate(tmp_path, "receiver.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate.ca_file))  # the deliverer trusts it
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(certificate.cert_file, certificate.key_file)
    fake_dns.names["receiver.test"] = ["127.0.0.1"]  # allowed in the tests' environment
    with receiver(tls=tls) as hook:
        created = client.post(
            "/v1/webhooks",
            json={"url": hook.url_at("receiver.test"), "event_types": ["job_submitted"]},
        )
        assert created.status_code == 201, created.text
        hook.secret = created.json()["secret"]
        submit_job(client)
        fake_dns.lookups.clear()

        assert deliver_due() == 1
        [call] = hook.wait_for(1)
    assert call.verified and call.host_header == f"receiver.test:{hook.port}"
    # Resolved once, for the check, and connected to the address checked.
    assert fake_dns.lookups == ["receiver.test"]
    assert connections == [("127.0.0.1", hook.port)]
    [delivered] = deliveries(client, created.json()["id"])
    assert delivered["status"] == "delivered"
