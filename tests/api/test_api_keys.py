"""API keys over HTTP: who may list, create and revoke them, and what an expired or revoked
key is told."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from orchestrator.auth import hash_key
from orchestrator.db import session_scope
from orchestrator.models import ApiKey, utcnow
from tests.factories import dataset_zip, new_api_key


def _as(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _error(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def _key_id(key: str) -> str:
    with session_scope() as session:
        return session.query(ApiKey).filter_by(key_hash=hash_key(key)).one().id


def test_an_admin_creates_lists_and_revokes_any_tenants_keys(client: TestClient) -> None:
    admin = _as(new_api_key("ops", admin=True))
    created = client.post(
        "/v1/api-keys", headers=admin, json={"tenant": "beta", "expires_in": "30d"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["key"].startswith(body["prefix"]) and body["tenant"] == "beta"
    assert (body["admin"], body["status"], body["revoked_at"]) == (False, "active", None)
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29) < expires - utcnow() <= timedelta(days=30)
    # The new key works, and the key itself is never shown again.
    assert client.get("/v1/jobs", headers=_as(body["key"])).status_code == 200
    listed = client.get("/v1/api-keys", headers=admin).json()
    assert {k["tenant"] for k in listed} == {"acme", "ops", "beta"}
    assert all("key" not in k for k in listed)
    assert [k["id"] for k in client.get("/v1/api-keys?tenant=beta", headers=admin).json()] == [
        body["id"]
    ]
    revoked = client.delete(f"/v1/api-keys/{body['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    # Revoking again changes nothing.
    assert client.delete(f"/v1/api-keys/{body['id']}", headers=admin).json() == revoked.json()
    assert _error(client.get("/v1/api-keys?tenant=nobody", headers=admin)) == (
        404,
        "not_found",
        "tenant",
    )


def test_a_tenant_lists_and_revokes_only_its_own_ordinary_keys(client: TestClient) -> None:
    spare = new_api_key("acme")
    acme_admin = new_api_key("acme", admin=True)
    beta = new_api_key("beta")
    listed = client.get("/v1/api-keys").json()
    assert len(listed) == 3 and {k["tenant"] for k in listed} == {"acme"}
    assert _error(client.get("/v1/api-keys?tenant=beta"))[:2] == (403, "forbidden")
    # Another tenant's key does not exist for this one; an admin key needs an admin.
    assert _error(client.delete(f"/v1/api-keys/{_key_id(beta)}"))[:2] == (404, "not_found")
    assert _error(client.delete(f"/v1/api-keys/{_key_id(acme_admin)}"))[:2] == (403, "forbidden")
    assert _error(client.post("/v1/api-keys", json={"tenant": "acme"}))[:2] == (403, "forbidden")
    assert client.delete(f"/v1/api-keys/{_key_id(spare)}").status_code == 200
    assert client.get("/v1/jobs", headers=_as(beta)).status_code == 200
    assert client.get("/v1/jobs", headers=_as(acme_admin)).status_code == 200


def test_a_revoked_key_is_told_it_was_revoked(client: TestClient) -> None:
    key = new_api_key("acme")
    client.delete(f"/v1/api-keys/{_key_id(key)}")
    for response in (
        client.get("/v1/jobs", headers=_as(key)),
        # a body-carrying request is refused at the door, unread
        client.post("/v1/datasets", headers=_as(key), files={"file": ("d.zip", dataset_zip())}),
    ):
        assert _error(response) == (401, "api_key_revoked", "Authorization")
        assert f"API key {key[:10]}… was revoked at " in response.json()["error"]["message"]


def test_an_expired_key_is_told_it_expired(client: TestClient) -> None:
    key = new_api_key("acme")
    with session_scope() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(key))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    for response in (
        client.get("/v1/jobs", headers=_as(key)),
        client.post("/v1/jobs", headers=_as(key), json={"dataset_id": "x"}),
    ):
        assert _error(response) == (401, "api_key_expired", "Authorization")
        assert "expired at " in response.json()["error"]["message"]
    listed = {k["prefix"]: k["status"] for k in client.get("/v1/api-keys").json()}
    assert listed[key[:10]] == "expired"
    unknown = client.get("/v1/jobs", headers=_as("rt_nothing"))
    assert _error(unknown) == (401, "unauthorized", "Authorization")
    assert "unknown API key" in unknown.json()["error"]["message"]


def test_a_bad_lifetime_is_refused(client: TestClient) -> None:
    admin = _as(new_api_key("ops", admin=True))
    for bad in ("30", "30x", "0d", "99999d"):
        response = client.post(
            "/v1/api-keys", headers=admin, json={"tenant": "beta", "expires_in": bad}
        )
        assert _error(response) == (422, "invalid_request", "expires_in"), bad
    assert _error(client.post("/v1/api-keys", headers=admin, json={"tenant": ""}))[2] == "tenant"
