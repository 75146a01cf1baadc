from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Job
from tests.factories import dataset_zip, new_api_key


def _submit(client: TestClient, dataset_id: str, **extra: Any):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny", **extra})


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_submit_with_defaults_queues_preprocess_on_t4(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    response = _submit(client, dataset_id)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["status"] == "queued"
    assert job["hyperparameters"]["lora_rank"] == 8
    assert job["hyperparameters"]["warmup_epochs"] == 5
    assert job["hyperparameters"]["total_epochs"] == 8
    assert [(p["name"], p["pool"], p["status"], p["attempt"]) for p in job["phases"]] == [
        ("preprocess", "t4", "queued", 1),
        ("warmup", "a10", "pending", 0),
        ("final", "a100", "pending", 0),
    ]
    assert job["cost"] == {"amount": "0.000000", "currency": "CNY"}
    assert [(m.task_name, m.queue, m.attempt) for m in recorded_dispatch.sent] == [
        ("relaytune.phase.preprocess", "gpu.t4", 1)
    ]
    assert client.get(f"/v1/jobs/{job['id']}").json()["phases"] == job["phases"]


def test_pools_are_chosen_per_job(client: TestClient, dataset_id: str) -> None:
    response = _submit(client, dataset_id, pools={"warmup": "a100"})
    assert response.status_code == 201, response.text
    assert [p["pool"] for p in response.json()["phases"]] == ["t4", "a100", "a100"]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"hyperparameters": {"warmup_epochs": 9, "total_epochs": 8}}, "hyperparameters"),
        ({"hyperparameters": {"total_epochs": 0}}, "hyperparameters.total_epochs"),
        ({"hyperparameters": {"warmup_epochs": -1}}, "hyperparameters.warmup_epochs"),
        ({"hyperparameters": {"lora_rank": 0}}, "hyperparameters.lora_rank"),
        ({"hyperparameters": {"lora_rnak": 4}}, "hyperparameters.lora_rnak"),
        # A sub-second interval once made the estimate divide by almost nothing: a 500.
        (
            {"hyperparameters": {"checkpoint_interval_seconds": 5e-324}},
            "hyperparameters.checkpoint_interval_seconds",
        ),
        ({"pools": {"warmup": "h100"}}, "pools.warmup"),
        ({"pools": {"export": "t4"}}, "pools.export"),
        ({"dataset_id": "nope"}, "dataset_id"),
    ],
)
def test_bad_job_is_rejected_and_creates_nothing(
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
    extra: dict[str, Any],
    param: str,
) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "m", **extra})
    assert response.status_code in (404, 422), response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["message"]
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


def test_other_tenants_job_is_not_found(client: TestClient, dataset_id: str) -> None:
    job_id = _submit(client, dataset_id).json()["id"]
    other = {"Authorization": f"Bearer {new_api_key('globex')}"}
    for path in ("", "/events", "/checkpoints", "/adapter"):
        assert client.get(f"/v1/jobs/{job_id}{path}", headers=other).status_code == 404
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=other).status_code == 404
    assert client.get("/v1/jobs", headers=other).json()["total"] == 0
    # and another tenant cannot use this tenant's data set either
    response = client.post(
        "/v1/jobs", headers=other, json={"dataset_id": dataset_id, "base_model": "m"}
    )
    assert response.status_code == 404


def test_list_filters_by_status_and_paginates(client: TestClient, dataset_id: str) -> None:
    ids = [_submit(client, dataset_id).json()["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel")
    page = client.get("/v1/jobs", params={"limit": 2}).json()
    assert page["total"] == 3 and len(page["data"]) == 2
    rest = client.get("/v1/jobs", params={"limit": 2, "offset": 2}).json()
    assert {j["id"] for j in page["data"] + rest["data"]} == set(ids)
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}).json()
    assert [j["id"] for j in cancelled["data"]] == [ids[0]]
    assert client.get("/v1/jobs", params={"status": "bogus"}).status_code == 422


def test_cancel_of_a_queued_job_is_immediate(client: TestClient, dataset_id: str) -> None:
    job_id = _submit(client, dataset_id).json()["id"]
    job = client.post(f"/v1/jobs/{job_id}/cancel").json()
    assert job["status"] == "cancelled"
    assert {p["status"] for p in job["phases"]} == {"cancelled"}
    again = client.post(f"/v1/jobs/{job_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "job_finished"
    types = [e["type"] for e in client.get(f"/v1/jobs/{job_id}/events").json()]
    assert types == [
        "job_submitted",
        "phase_queued",
        "cancel_requested",
        "phase_cancelled",
        "job_cancelled",
    ]


def test_requeue_rules(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = _submit(client, dataset_id).json()["id"]
    unknown = client.post(f"/v1/jobs/{job_id}/phases/export/requeue")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_phase"
    busy = client.post(f"/v1/jobs/{job_id}/phases/preprocess/requeue")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "phase_in_progress"
    client.post(f"/v1/jobs/{job_id}/cancel")
    needs_input = client.post(f"/v1/jobs/{job_id}/phases/warmup/requeue")
    assert needs_input.status_code == 409
    assert needs_input.json()["error"]["code"] == "input_missing"
    requeued = client.post(f"/v1/jobs/{job_id}/phases/preprocess/requeue")
    assert requeued.status_code == 200, requeued.text
    body = requeued.json()
    assert body["status"] == "queued"
    assert [(p["status"], p["attempt"]) for p in body["phases"]] == [
        ("queued", 2),
        ("pending", 0),
        ("pending", 0),
    ]
    assert [m.attempt for m in recorded_dispatch.sent] == [1, 2]


def test_outputs_before_the_final_phase_are_a_conflict(client: TestClient, dataset_id: str) -> None:
    job_id = _submit(client, dataset_id).json()["id"]
    for what in ("adapter", "evaluation"):
        response = client.get(f"/v1/jobs/{job_id}/{what}")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == f"{what}_not_ready"


def test_pools_and_health(client: TestClient) -> None:
    pools = client.get("/v1/pools").json()
    assert [(p["name"], p["queue"], p["hourly_price"]["amount"]) for p in pools] == [
        ("t4", "gpu.t4", "1.0000"),
        ("a10", "gpu.a10", "3.0000"),
        ("a100", "gpu.a100", "8.0000"),
    ]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    assert client.get("/docs").status_code == 200
    assert client.get("/v1/pools", headers={"Authorization": ""}).status_code == 401


def test_upload_then_submit_keeps_a_copy_under_the_job_prefix(client: TestClient) -> None:
    from orchestrator.storage import get_store

    upload = dataset_zip()
    dataset = client.post("/v1/datasets", files={"file": ("d.zip", upload)}).json()
    job_id = _submit(client, dataset["id"]).json()["id"]
    assert get_store().get_bytes(f"jobs/{job_id}/dataset/dataset.zip") == upload


def test_metrics_count_jobs_and_phases_from_the_store(client: TestClient, dataset_id: str) -> None:
    _submit(client, dataset_id)
    cancelled = _submit(client, dataset_id).json()["id"]
    client.post(f"/v1/jobs/{cancelled}/cancel")
    admin = {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}  # operators only
    text = client.get("/metrics", headers=admin).text
    assert 'relaytune_jobs{status="queued"} 1.0' in text
    assert 'relaytune_jobs{status="cancelled"} 1.0' in text
    assert 'relaytune_phases{pool="t4",status="queued"} 1.0' in text
    assert 'relaytune_phases{pool="a100",status="pending"} 1.0' in text
    assert 'relaytune_billed_cost{currency="CNY",pool="t4"} 0.0' in text


def _submitted_event(client: TestClient, job_id: str) -> dict[str, Any]:
    events = client.get(f"/v1/jobs/{job_id}/events").json()
    return next(e for e in events if e["type"] == "job_submitted")


def test_modules_to_save_is_accepted_with_a_vllm_warning(
    client: TestClient, dataset_id: str
) -> None:
    response = _submit(client, dataset_id, hyperparameters={"modules_to_save": ["lm_head"]})
    assert response.status_code == 201, response.text
    warnings = _submitted_event(client, response.json()["id"])["data"]["warnings"]
    assert len(warnings) == 1
    assert "vLLM" in warnings[0] and "modules_to_save (lm_head)" in warnings[0]


def test_a_plain_lora_job_gets_no_warning(client: TestClient, dataset_id: str) -> None:
    job_id = _submit(client, dataset_id).json()["id"]
    assert "warnings" not in _submitted_event(client, job_id)["data"]
