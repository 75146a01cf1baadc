"""GET /v1/jobs/{id}/adapter beyond the default: the merged model a job exported, and the
adapter of any of its checkpoints."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient
from httpx import Response

from orchestrator.storage import get_store
from tests.factories import dataset_zip
from tests.orchestrator.relay_helpers import claim, complete
from worker.runner import run_phase

MERGED_RUN = {
    "warmup_epochs": 1,
    "total_epochs": 2,
    "validation_samples": 1,
    "augmentation": {"enabled": False},
    "export_merged": True,
}


def _zip(response: Response) -> zipfile.ZipFile:
    assert response.status_code == 200, response.text
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None  # every member's CRC checks out
    return archive


def _error(response: Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    return dict(response.json()["error"])


def _finished_job(client: TestClient, tiny_model_dir: str) -> str:
    """A job on the tiny model run through its three phases by the real recipe."""
    dataset = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())}).json()["id"]
    job_id = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset, "base_model": tiny_model_dir, "hyperparameters": MERGED_RUN},
    ).json()["id"]
    for phase in ("preprocess", "warmup", "final"):
        run_phase(
            {"job_id": job_id, "phase": phase, "attempt": 1, "pool": "x"},
            worker_id=f"test/{phase}",
        )
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "succeeded"
    return str(job_id)


def test_a_finished_job_serves_its_merged_model_and_each_checkpoints_adapter(
    client: TestClient, tiny_model_dir: str
) -> None:
    job_id = _finished_job(client, tiny_model_dir)
    url = f"/v1/jobs/{job_id}/adapter"
    store = get_store()

    merged = client.get(url, params={"kind": "merged"})
    exported = client.get(f"/v1/jobs/{job_id}/evaluation").json()["merged"]
    assert sorted(_zip(merged).namelist()) == exported["files"]
    assert {"config.json", "tokenizer_config.json"} <= set(exported["files"])
    assert f"relaytune-{job_id}-merged.zip" in merged.headers["content-disposition"]

    default = _zip(client.get(url))
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(default.namelist())
    checkpoints = client.get(f"/v1/jobs/{job_id}/checkpoints").json()
    by_kind = {(c["phase"], c["kind"]): c for c in checkpoints}

    export = by_kind["final", "adapter"]["id"]
    exported_adapter = _zip(client.get(url, params={"checkpoint": export}))
    assert exported_adapter.read("adapter_model.safetensors") == default.read(
        "adapter_model.safetensors"
    )
    warmup = by_kind["warmup", "final"]
    warmup_adapter = _zip(client.get(url, params={"checkpoint": warmup["id"]}))
    stored = store.get_bytes(f"{warmup['key']}/adapter/adapter_model.safetensors")
    assert warmup_adapter.read("adapter_model.safetensors") == stored
    assert stored != default.read("adapter_model.safetensors")  # trained on after warmup

    artifact = by_kind["preprocess", "artifact"]["id"]
    error = _error(client.get(url, params={"checkpoint": artifact}), 422)
    assert error["param"] == "checkpoint" and artifact in error["message"]


def test_merged_and_checkpoint_downloads_say_what_is_missing(
    client: TestClient, dataset_id: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    url = f"/v1/jobs/{job_id}/adapter"
    error = _error(client.get(url, params={"kind": "merged"}), 409)
    assert error["code"] == "merged_not_ready"

    complete(claim(job_id, "preprocess"))
    complete(claim(job_id, "warmup"))
    final = claim(job_id, "final")
    get_store().put_bytes(f"{final.run_prefix}/adapter/adapter_model.safetensors", b"weights")
    complete(final)  # exported an adapter and no merged model
    error = _error(client.get(url, params={"kind": "merged"}), 409)
    assert (error["code"], error["param"]) == ("merged_not_exported", "kind")
    assert "export_merged" in error["message"]

    error = _error(client.get(url, params={"checkpoint": "no-such-checkpoint"}), 404)
    assert error["param"] == "checkpoint" and "no-such-checkpoint" in error["message"]
    error = _error(client.get(url, params={"kind": "everything"}), 422)
    assert error["param"] == "kind"
    error = _error(client.get(url, params={"kind": "merged", "checkpoint": "x"}), 422)
    assert error["param"] == "checkpoint"
    assert _zip(client.get(url)).read("adapter_model.safetensors") == b"weights"
