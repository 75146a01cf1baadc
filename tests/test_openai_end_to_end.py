"""The official `openai` package drives a whole relay on real workers: a .jsonl with data-URL
images is uploaded as a file, three worker processes train it, and the job, its events and
its checkpoints read back in OpenAI's shapes."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient

from orchestrator.settings import TINY_MODEL_NAME
from services.api.main import create_app
from tests.api.openai_helpers import chat_jsonl, openai_client
from tests.factories import new_api_key
from tests.test_end_to_end import workers

__all__ = ["workers"]  # the fixture: one `relaytune worker` process per pool


def _wait(api: openai.OpenAI, job_id: str, logs: Path, timeout: float = 300.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = api.fine_tuning.jobs.retrieve(job_id).status
        if status in ("succeeded", "failed", "cancelled"):
            return status
        time.sleep(1.0)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs.glob("*.log"))
    raise AssertionError(f"job {job_id} did not finish in {timeout}s\n{tails}")


@pytest.mark.e2e
def test_the_openai_client_fine_tunes_on_real_workers(
    clean_db: None, workers: dict[str, str], tiny_model_dir: str
) -> None:
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key()}"
        api = openai_client(client)
        training = api.files.create(file=("boards.jsonl", chat_jsonl(6)), purpose="fine-tune")
        job = api.fine_tuning.jobs.create(
            model=TINY_MODEL_NAME,
            training_file=training.id,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
            suffix="boards",
        )
        status = _wait(api, job.id, Path(workers["logs"]))
        done = api.fine_tuning.jobs.retrieve(job.id)
        assert status == "succeeded", done.error
        assert done.fine_tuned_model == f"ft:{TINY_MODEL_NAME}:boards:{job.id}"
        assert done.trained_tokens and done.trained_tokens > 0

        events = list(api.fine_tuning.jobs.list_events(job.id, limit=50))
        assert events[0].data["relaytune_type"] == "job_succeeded"
        assert any(e.type == "metrics" and "loss" in e.message for e in events)

        checkpoints = list(api.fine_tuning.jobs.checkpoints.list(job.id))
        assert checkpoints, "the training phases recorded no checkpoint"
        assert all(c.fine_tuning_job_id == job.id for c in checkpoints)
        assert any(c.metrics.train_loss is not None for c in checkpoints)
        steps = [c.step_number for c in checkpoints]
        assert steps == sorted(steps, reverse=True)

        adapter = client.get(f"/v1/jobs/{job.id}/adapter")
        assert adapter.status_code == 200
