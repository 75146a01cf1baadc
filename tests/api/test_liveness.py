"""A dead worker or an unserved pool is visible on the job, not hidden behind its status."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Phase, utcnow
from tests.orchestrator.relay_helpers import claim, expire_lease, run_reaper


def _submit(client: TestClient, dataset_id: str) -> str:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _phase(client: TestClient, job_id: str, name: str) -> dict[str, Any]:
    body = client.get(f"/v1/jobs/{job_id}").json()
    return next(p for p in body["phases"] if p["name"] == name)


def test_a_running_phase_whose_worker_died_shows_stalled_and_its_meter_stops(
    client: TestClient, dataset_id: str
) -> None:
    job_id = _submit(client, dataset_id)
    claim(job_id, "preprocess")
    assert _phase(client, job_id, "preprocess")["status_detail"] is None
    expire_lease(job_id, "preprocess", heartbeat_ago=30)
    phase = _phase(client, job_id, "preprocess")
    assert (phase["status"], phase["status_detail"]) == ("running", "stalled")
    assert phase["last_heartbeat_at"] is not None
    assert Decimal(_phase(client, job_id, "preprocess")["cost"]["amount"]) == Decimal(
        phase["cost"]["amount"]
    )


def test_a_queued_phase_no_worker_serves_shows_waiting_for_worker(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = _submit(client, dataset_id)
    assert _phase(client, job_id, "preprocess")["status_detail"] is None  # just queued
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id)
            .values(queued_at=utcnow() - timedelta(minutes=5))
        )
    recorded_dispatch.workers = {"a10@host": ["gpu.a10"]}  # only the warmup pool is served
    run_reaper()
    assert _phase(client, job_id, "preprocess")["status_detail"] == "waiting_for_worker"
    recorded_dispatch.workers = {"t4@host": ["gpu.t4"]}
    run_reaper()
    listed = client.get("/v1/jobs").json()["data"][0]["phases"][0]
    assert (listed["status"], listed["status_detail"]) == ("queued", None)
