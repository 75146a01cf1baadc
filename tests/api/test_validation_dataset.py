"""A job's separate validation data set: named at submit, checked like the training data set,
stored on the job and held while the job is unfinished."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Job
from orchestrator.storage import get_store
from tests.api.validation_sets import refused_validation_sets, upload
from tests.factories import dataset_zip

HELD_OUT = {"v1.png": {"question": "Which part is abnormal?", "answer": "resistor 7"}}


def _submit(client: TestClient, dataset_id: str, **extra: Any):  # type: ignore[no-untyped-def]
    return client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny", **extra})


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_a_job_keeps_and_shows_its_validation_data_set(client: TestClient, dataset_id: str) -> None:
    held_out = dataset_zip(HELD_OUT)
    validation_id = upload(client, held_out)
    response = _submit(client, dataset_id, validation_dataset_id=validation_id)
    assert response.status_code == 201, response.text
    job = response.json()
    assert (job["dataset_id"], job["validation_dataset_id"]) == (dataset_id, validation_id)
    assert client.get(f"/v1/jobs/{job['id']}").json()["validation_dataset_id"] == validation_id
    # The job runs from its own copy, as it does for its training data.
    assert get_store().get_bytes(f"jobs/{job['id']}/dataset/validation.zip") == held_out
    submitted = client.get(f"/v1/jobs/{job['id']}/events").json()[0]
    assert submitted["data"]["validation_dataset_id"] == validation_id


def test_a_job_without_one_shows_null(client: TestClient, dataset_id: str) -> None:
    job = _submit(client, dataset_id).json()
    assert job["validation_dataset_id"] is None
    assert not get_store().exists(f"jobs/{job['id']}/dataset/validation.zip")


@refused_validation_sets(HELD_OUT)
def test_a_bad_validation_data_set_is_refused_and_creates_nothing(
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
    validation: Any,
    extra: dict[str, Any],
    status: int,
    param: str,
) -> None:
    response = _submit(
        client, dataset_id, validation_dataset_id=validation(client, dataset_id), **extra
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert (error["param"], bool(error["message"])) == (param, True)
    assert _job_count() == 0
    assert recorded_dispatch.sent == []
    assert get_store().list("jobs/") == []


def test_a_validation_data_set_in_use_is_not_deleted_until_the_job_finishes(
    client: TestClient, dataset_id: str
) -> None:
    validation_id = upload(client, dataset_zip(HELD_OUT))
    job_id = _submit(client, dataset_id, validation_dataset_id=validation_id).json()["id"]
    refused = client.delete(f"/v1/datasets/{validation_id}")
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "dataset_in_use" and job_id in error["message"]
    assert client.get(f"/v1/datasets/{validation_id}").status_code == 200

    client.post(f"/v1/jobs/{job_id}/cancel")
    assert client.delete(f"/v1/datasets/{validation_id}").status_code == 204
    # The job keeps its record and its own copy; the data set is gone for new jobs.
    assert client.get(f"/v1/jobs/{job_id}").json()["validation_dataset_id"] == validation_id
    assert get_store().exists(f"jobs/{job_id}/dataset/validation.zip")
    refused = _submit(client, dataset_id, validation_dataset_id=validation_id)
    assert refused.status_code == 404
    assert refused.json()["error"]["param"] == "validation_dataset_id"
