"""Same-pool fusion through real workers: warmup and final on one pool run in one process with
one model load, and give the relay's adapter bit for bit."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from services.api.main import create_app
from tests.factories import new_api_key, zip_folder
from tests.test_end_to_end import _wait_for_job, workers  # noqa: F401  (fixture)

HP = {
    "warmup_epochs": 1,
    "total_epochs": 2,
    "validation_samples": 2,
    "augmentation": {"enabled": False},
}


def _run(
    client: TestClient, dataset_id: str, model: str, pools: dict[str, str], logs: Path
) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    submitted = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset_id, "base_model": model, "hyperparameters": HP, "pools": pools},
    )
    assert submitted.status_code == 201, submitted.text
    job = _wait_for_job(client, submitted.json()["id"], logs)
    assert job["status"] == "succeeded", job
    events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()
    adapter = client.get(f"/v1/jobs/{job['id']}/adapter")
    assert adapter.status_code == 200
    from safetensors.torch import load

    with zipfile.ZipFile(io.BytesIO(adapter.content)) as archive:
        tensors = load(archive.read("adapter_model.safetensors"))
    return job, events, tensors


@pytest.mark.e2e
def test_fused_warmup_and_final_load_the_model_once_and_match_the_relay(
    clean_db: None,
    workers: dict[str, str],  # noqa: F811  (the fixture imported above)
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    import torch

    logs = Path(workers["logs"])
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key()}"
        upload = client.post("/v1/datasets", files={"file": ("ex.zip", zip_folder(example_dir))})
        assert upload.status_code == 201, upload.text
        dataset_id = upload.json()["id"]
        _, relay_events, relay_adapter = _run(
            client, dataset_id, tiny_model_dir, {"warmup": "a10", "final": "a100"}, logs
        )
        fused, fused_events, fused_adapter = _run(
            client, dataset_id, tiny_model_dir, {"warmup": "a10", "final": "a10"}, logs
        )
        # The boundary checkpoint is published as in the relay: final can be re-queued alone.
        kinds = {
            (c["phase"], c["kind"])
            for c in client.get(f"/v1/jobs/{fused['id']}/checkpoints").json()
        }
        assert ("warmup", "final") in kinds

    def loads(events: list[dict[str, Any]]) -> list[str]:
        return [e["phase"] for e in events if e["type"] == "model_loaded"]

    assert loads(relay_events) == ["warmup", "final"]
    assert loads(fused_events) == ["warmup"]  # one load for both training phases
    assert [e["phase"] for e in fused_events if e["type"] == "phase_fused"] == ["final"]
    workers_of = {
        e["phase"]: e["data"]["worker_id"] for e in fused_events if e["type"] == "phase_started"
    }
    assert workers_of["warmup"] == workers_of["final"]
    # Still two phases, each with its own attempt, cost and timing.
    phases = {p["name"]: p for p in fused["phases"]}
    assert all(p["status"] == "succeeded" and p["attempt"] == 1 for p in phases.values())
    assert float(phases["final"]["cost"]["amount"]) > 0
    assert phases["final"]["timing"]["fused"] is True
    assert phases["final"]["timing"]["input_bytes"] == 0  # nothing fetched from storage
    assert relay_adapter.keys() == fused_adapter.keys()
    for key, value in relay_adapter.items():
        assert torch.equal(value, fused_adapter[key]), key
