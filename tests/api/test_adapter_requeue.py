"""The adapter a job serves stays available while its final phase runs again."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient

from orchestrator.runs import Claim
from orchestrator.storage import get_store
from tests.orchestrator.relay_helpers import claim, complete


def _finish_with_adapter(final: Claim, weights: bytes) -> None:
    store = get_store()
    store.put_bytes(f"{final.run_prefix}/adapter/adapter_model.safetensors", weights)
    store.put_bytes(f"{final.run_prefix}/evaluation.json", b'{"attempt": %d}' % final.attempt)
    complete(final)


def _adapter(client: TestClient, job_id: str) -> bytes:
    response = client.get(f"/v1/jobs/{job_id}/adapter")
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        return archive.read("adapter_model.safetensors")


def test_requeueing_final_keeps_serving_the_last_good_adapter_until_replaced(
    client: TestClient, dataset_id: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    complete(claim(job_id, "preprocess"))
    complete(claim(job_id, "warmup"))
    _finish_with_adapter(claim(job_id, "final"), b"first")
    assert _adapter(client, job_id) == b"first"

    assert client.post(f"/v1/jobs/{job_id}/phases/final/requeue").status_code == 200
    assert _adapter(client, job_id) == b"first"  # queued again: the old adapter still serves
    again = claim(job_id, "final", attempt=2)
    assert _adapter(client, job_id) == b"first"  # running again: still served
    assert client.get(f"/v1/jobs/{job_id}/evaluation").json() == {"attempt": 1}

    _finish_with_adapter(again, b"second")
    assert _adapter(client, job_id) == b"second"
    assert client.get(f"/v1/jobs/{job_id}/evaluation").json() == {"attempt": 2}


def test_a_job_whose_final_phase_never_succeeded_has_no_adapter(
    client: TestClient, dataset_id: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    response = client.get(f"/v1/jobs/{job_id}/adapter")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "adapter_not_ready"
