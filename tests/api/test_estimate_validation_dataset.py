"""POST /v1/estimates with a validation data set: checked as submit checks it, and counted as
the worker runs it (the training data set trains whole, the validation set is held out whole);
the job's stored per-phase estimate counts it the same way."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.db import session_scope
from orchestrator.models import Job
from tests.api.validation_sets import refused_validation_sets, upload
from tests.factories import dataset_zip

EIGHT_B = "/models/Qwen3-VL-8B-Instruct"
HELD_OUT = {
    f"v{i}.png": {"question": "Which part is abnormal?", "answer": f"resistor {i}"} for i in (1, 2)
}


def _estimate(client: TestClient, dataset_id: str, **extra: Any) -> Any:
    return client.post(
        "/v1/estimates", json={"dataset_id": dataset_id, "base_model": EIGHT_B, **extra}
    )


def _requested_phases(answer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    requested = next(p for p in answer["plans"] if p["name"] == "requested")
    return {p["phase"]: p for p in requested["phases"]}


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_the_estimate_counts_the_validation_data_set_the_job_would_run_with(
    client: TestClient, dataset_id: str
) -> None:
    """3 training samples, 1 augmented copy each, 5 warmup and 3 final epochs. Split: 1 held
    out, 2 x 2 trained per epoch. With a 2-sample validation set: 3 x 2 trained per epoch."""
    validation_id = upload(client, dataset_zip(HELD_OUT))
    split = _estimate(client, dataset_id)
    held_out = _estimate(client, dataset_id, validation_dataset_id=validation_id)
    assert split.status_code == held_out.status_code == 200, held_out.text
    assert split.json()["validation_dataset"] is None
    shown = held_out.json()["validation_dataset"]
    assert (shown["id"], shown["num_samples"]) == (validation_id, 2)
    before, after = _requested_phases(split.json()), _requested_phases(held_out.json())
    samples = {phase: (before[phase]["samples"], after[phase]["samples"]) for phase in before}
    assert samples == {"preprocess": (3 + 2, 3 + 2 + 3), "warmup": (20, 30), "final": (12, 18)}
    # The final evaluation scores the 2 validation samples instead of the 1 held out.
    assert after["final"]["seconds"]["evaluate"] == pytest.approx(
        2 * before["final"]["seconds"]["evaluate"], rel=1e-3
    )
    assert _job_count() == 0


def test_a_submitted_job_stores_the_estimate_with_its_validation_data_set(
    client: TestClient, dataset_id: str
) -> None:
    validation_id = upload(client, dataset_zip(HELD_OUT))
    body = {"dataset_id": dataset_id, "base_model": EIGHT_B, "validation_dataset_id": validation_id}
    quoted = _requested_phases(client.post("/v1/estimates", json=body).json())
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 201, response.text
    stored = {p["name"]: p["estimate"] for p in response.json()["phases"]}
    assert {name: e["samples"] for name, e in stored.items()} == {
        "preprocess": 8,
        "warmup": 30,
        "final": 18,
    }
    for name, estimate in stored.items():
        assert (estimate["seconds"], estimate["cost"]) == (
            quoted[name]["seconds"],
            quoted[name]["cost"],
        ), name


@refused_validation_sets(HELD_OUT)
def test_a_bad_validation_data_set_is_refused_as_submit_refuses_it(
    client: TestClient,
    dataset_id: str,
    validation: Any,
    extra: dict[str, Any],
    status: int,
    param: str,
) -> None:
    validation_id = validation(client, dataset_id)
    response = _estimate(client, dataset_id, validation_dataset_id=validation_id, **extra)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if status == 404:
        assert validation_id in error["message"]
    assert _job_count() == 0
