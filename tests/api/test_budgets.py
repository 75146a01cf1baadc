"""A job's budget over the API (PATCH, requeue's starting point) and tenants' spending limits."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.db import session_scope
from orchestrator.models import Job
from tests.factories import new_api_key


def _submit(client: TestClient, dataset_id: str) -> Any:
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny"})


@pytest.fixture
def job_id(client: TestClient, dataset_id: str) -> str:
    response = _submit(client, dataset_id)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}


def test_patch_sets_raises_and_lifts_max_cost(client: TestClient, job_id: str) -> None:
    assert client.get(f"/v1/jobs/{job_id}").json()["max_cost"] is None
    response = client.patch(f"/v1/jobs/{job_id}", json={"max_cost": "2.5"})
    assert response.status_code == 200, response.text
    assert response.json()["max_cost"] == {"amount": "2.500000", "currency": "CNY"}
    assert (
        client.patch(f"/v1/jobs/{job_id}", json={"max_cost": 40}).json()["max_cost"]["amount"]
        == "40.000000"
    )
    assert client.patch(f"/v1/jobs/{job_id}", json={"max_cost": None}).json()["max_cost"] is None
    changes = [
        e["data"]
        for e in client.get(f"/v1/jobs/{job_id}/events").json()
        if e["type"] == "budget_changed"
    ]
    assert [(c["previous"], c["max_cost"]) for c in changes] == [
        (None, "2.500000"),
        ("2.500000", "40.000000"),
        ("40.000000", None),
    ]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"max_cost": "-1"}, "max_cost"),
        ({"max_cost": "1.0000001"}, "max_cost"),
        ({"max_cost": "123456789"}, "max_cost"),
        ({"max_cost": "lots"}, "max_cost"),
        ({"max_cost": "NaN"}, "max_cost"),
        ({}, "max_cost"),
        ({"max_cost": 1, "pools": {"warmup": "a100"}}, "pools"),
    ],
)
def test_bad_budgets_are_refused_naming_the_field(
    client: TestClient, job_id: str, body: dict[str, Any], param: str
) -> None:
    response = client.patch(f"/v1/jobs/{job_id}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param
    assert client.get(f"/v1/jobs/{job_id}").json()["max_cost"] is None


def test_another_tenants_job_budget_is_not_found(client: TestClient, job_id: str) -> None:
    other = {"Authorization": f"Bearer {new_api_key('globex')}"}
    response = client.patch(f"/v1/jobs/{job_id}", json={"max_cost": "1"}, headers=other)
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "job_id"


def test_requeue_from_must_be_checkpoint_or_input(client: TestClient, job_id: str) -> None:
    client.post(f"/v1/jobs/{job_id}/cancel")
    url = f"/v1/jobs/{job_id}/phases/preprocess/requeue"
    bad = client.post(url, params={"from": "scratch"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "from"
    mixed = client.post(url, params={"from": "input"}, json={"from": "checkpoint"})
    assert mixed.status_code == 422 and mixed.json()["error"]["param"] == "from"
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    ok = client.post(url, json={"from": "input"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["phases"][0]["status"] == "queued"
    requeued = [
        e["data"]
        for e in client.get(f"/v1/jobs/{job_id}/events").json()
        if e["type"] == "phase_requeued"
    ]
    assert requeued[-1]["start_from"] == "input"


def test_spending_limits_are_set_by_admins_and_read_by_their_tenant(
    client: TestClient, admin: dict[str, str]
) -> None:
    url = "/v1/tenants/acme/spending-limit"
    forbidden = client.put(url, json={"amount": "10"})
    assert forbidden.status_code == 403 and forbidden.json()["error"]["code"] == "forbidden"
    response = client.put(url, json={"amount": "10", "period_days": 7}, headers=admin)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "tenant": "acme",
        "limit": {"amount": "10.000000", "currency": "CNY"},
        "period_days": 7,
        "spent": {"amount": "0.000000", "currency": "CNY"},
        "remaining": {"amount": "10.000000", "currency": "CNY"},
    }
    assert client.get("/v1/tenants/acme/spending").json()["period_days"] == 7
    assert client.get("/v1/tenants/ops/spending").status_code == 403
    assert client.get("/v1/tenants/ops/spending", headers=admin).status_code == 200
    missing = client.put("/v1/tenants/nobody/spending-limit", json={"amount": 1}, headers=admin)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"
    bad = client.put(url, json={"amount": 1, "period_days": 0}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "period_days"
    lifted = client.put(url, json={"amount": None}, headers=admin).json()
    assert (lifted["limit"], lifted["remaining"]) == (None, None)


def test_a_tenant_at_its_limit_cannot_submit_and_nothing_is_created(
    client: TestClient, dataset_id: str, admin: dict[str, str]
) -> None:
    client.put("/v1/tenants/acme/spending-limit", json={"amount": "0"}, headers=admin)
    response = _submit(client, dataset_id)
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert error["code"] == "spending_limit_exceeded"
    assert "has spent 0.000000 CNY of its spending limit 0.000000 CNY" in error["message"]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/estimates"])
@pytest.mark.parametrize("max_cost", ["100000000", "99999999.9999999", 1e12])
def test_a_budget_the_store_cannot_hold_is_refused_at_submit(
    client: TestClient, dataset_id: str, route: str, max_cost: str | float
) -> None:
    # max_cost is kept as Numeric(14, 6): a larger amount is a 422, not a failed insert.
    response = client.post(route, json={"dataset_id": dataset_id, "max_cost": max_cost})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "max_cost"
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
