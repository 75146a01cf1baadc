"""Pools as data over the API: anyone reads them, only an admin key changes them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.liveness import SEEN_WITHIN
from orchestrator.models import Worker, utcnow
from tests.factories import new_api_key
from tests.orchestrator.relay_helpers import run_reaper

H100 = {
    "gpu_model": "NVIDIA H100",
    "gpu_memory_gb": 80,
    "hourly_price": "20",
    "queue": "gpu.h100-spot",
    "supports_bf16": True,
    "peak_tflops": 989,
}


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}


def _pools(client: TestClient) -> dict[str, Any]:
    return {p["name"]: p for p in client.get("/v1/pools").json()}


def test_pools_list_their_queue_gpu_and_price(client: TestClient) -> None:
    a10 = _pools(client)["a10"]
    assert a10 == {
        "name": "a10",
        "queue": "gpu.a10",
        "gpu_model": "NVIDIA A10",
        "gpu_memory_gb": 24,
        "supports_bf16": True,
        "peak_tflops": 125.0,
        "memory_bandwidth_gbs": 600.0,
        "hourly_price": {"amount": "3.0000", "currency": "CNY"},
        "live_workers": 0,
        "workers": [],
    }


def test_pools_show_the_workers_the_reaper_saw_lately_and_none_once_they_are_stale(
    client: TestClient, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    recorded_dispatch.workers = {"t4@host": ["gpu.t4"], "spare@host": ["gpu.a10", "gpu.t4"]}
    run_reaper()
    pools = _pools(client)
    assert pools["t4"]["live_workers"] == 2
    assert [w["hostname"] for w in pools["t4"]["workers"]] == ["spare@host", "t4@host"]
    assert pools["t4"]["workers"][0]["last_seen_at"].endswith("Z")
    assert (pools["a10"]["live_workers"], pools["a100"]["live_workers"]) == (1, 0)
    with session_scope() as session:  # as if no worker answered for a few reaper rounds
        session.execute(
            update(Worker).values(last_seen_at=utcnow() - SEEN_WITHIN - timedelta(seconds=1))
        )
    assert {(p["live_workers"], len(p["workers"])) for p in _pools(client).values()} == {(0, 0)}


def test_an_ordinary_key_may_not_change_a_pool(client: TestClient) -> None:
    response = client.put("/v1/pools/a100", json={"hourly_price": "0.01"})
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "forbidden"
    assert "admin" in error["message"] and "/v1/pools/a100" in error["message"]
    assert _pools(client)["a100"]["hourly_price"]["amount"] == "8.0000"


def test_an_admin_reprices_a_pool_and_only_the_given_fields_change(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.put("/v1/pools/a100", json={"hourly_price": "7.5"}, headers=admin)
    assert response.status_code == 200, response.text
    a100 = _pools(client)["a100"]
    assert a100["hourly_price"] == {"amount": "7.5000", "currency": "CNY"}
    assert (a100["gpu_model"], a100["gpu_memory_gb"], a100["queue"]) == (
        "NVIDIA A100",
        80,
        "gpu.a100",
    )


@pytest.mark.parametrize(
    ("name", "body", "param", "code"),
    [
        ("a100", {"hourly_price": "-1"}, "hourly_price", "invalid_request"),
        ("a100", {"hourly_price": "1.23456"}, "hourly_price", "invalid_request"),
        ("a100", {"gpu_memory_gb": 0}, "gpu_memory_gb", "invalid_request"),
        ("a100", {"currency": "euro"}, "currency", "invalid_request"),
        ("a100", {"queue": "has space"}, "queue", "invalid_request"),
        ("a100", {"price": 3}, "price", "invalid_request"),
        ("a100", {"currency": "USD"}, "currency", "currency_mismatch"),
        ("h100", {"gpu_model": "NVIDIA H100"}, "gpu_memory_gb", "missing_field"),
        ("H 100", H100, "name", "invalid_request"),
    ],
)
def test_bad_pool_bodies_name_the_field_and_change_nothing(
    client: TestClient,
    admin: dict[str, str],
    name: str,
    body: dict[str, Any],
    param: str,
    code: str,
) -> None:
    before = _pools(client)
    response = client.put(f"/v1/pools/{name}", json=body, headers=admin)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["param"], error["code"]) == (param, code), error
    assert _pools(client) == before


def test_a_new_pool_is_usable_by_a_job_and_dispatched_to_its_queue(
    client: TestClient,
    admin: dict[str, str],
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    response = client.put("/v1/pools/h100", json=H100, headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["hourly_price"] == {"amount": "20.0000", "currency": "CNY"}
    job = client.post(
        "/v1/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": "tiny",
            "pools": {"preprocess": "h100", "warmup": "h100"},
        },
    )
    assert job.status_code == 201, job.text
    assert [p["pool"] for p in job.json()["phases"]] == ["h100", "h100", "a100"]
    assert job.json()["phases"][0]["gpu_model"] == "NVIDIA H100"
    sent = recorded_dispatch.sent[-1]
    assert (sent.pool, sent.route) == ("h100", "gpu.h100-spot")


def test_a_moved_queue_routes_the_next_message(
    client: TestClient,
    admin: dict[str, str],
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    client.put("/v1/pools/t4", json={"queue": "gpu.t4-east"}, headers=admin)
    client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny"})
    assert recorded_dispatch.sent[-1].route == "gpu.t4-east"


def test_the_api_upserts_the_pools_file_when_it_starts(
    client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.settings import get_settings
    from services.api.main import create_app

    path = tmp_path / "pools.yaml"
    path.write_text("- {name: h100, gpu_model: NVIDIA H100, gpu_memory_gb: 80, hourly_price: 20}\n")
    monkeypatch.setenv("RELAYTUNE_POOLS_FILE", str(path))
    get_settings.cache_clear()
    try:
        with TestClient(create_app()) as started:
            started.headers.update(client.headers)
            assert _pools(started)["h100"]["queue"] == "gpu.h100"
    finally:
        monkeypatch.delenv("RELAYTUNE_POOLS_FILE")
        get_settings.cache_clear()
