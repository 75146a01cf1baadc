"""Submit the example over REST; three phases run on three queues in three worker processes
that hand over only through S3; the adapter from the API loads with plain peft elsewhere."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Phase
from services.api.main import create_app
from tests.factories import new_api_key, zip_folder

POOLS = ("t4", "a10", "a100")

LOAD_AND_GENERATE = textwrap.dedent("""
    import sys
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    base_dir, adapter_dir = sys.argv[1], sys.argv[2]
    base = AutoModelForImageTextToText.from_pretrained(base_dir)
    model = PeftModel.from_pretrained(base, adapter_dir)
    processor = AutoProcessor.from_pretrained(base_dir)
    inputs = processor.tokenizer("Which part is abnormal?", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = out[0, inputs["input_ids"].shape[1]:]
    assert new_tokens.numel() > 0
    print("GENERATED:" + processor.tokenizer.decode(new_tokens, skip_special_tokens=False))
""")


@pytest.fixture
def workers(
    service_env: dict[str, str], private_broker_url: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """One `relaytune worker --pool P` process per pool, as a deployment runs them."""
    broker = private_broker_url
    # The workers share this machine's CPUs, as under `relaytune up`: each takes its share.
    env = {
        **os.environ,
        **service_env,
        "RELAYTUNE_BROKER_URL": broker,
        "RELAYTUNE_HEARTBEAT_SECONDS": "2",
        "RELAYTUNE_WORKERS_PER_MACHINE": str(len(POOLS)),
    }
    procs = []
    for pool in POOLS:
        log = (tmp_path / f"worker-{pool}.log").open("wb")
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "worker", "--pool", pool],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    dispatch.set_dispatcher(dispatch.CeleryDispatcher(broker))
    yield {"broker": broker, "logs": str(tmp_path)}
    dispatch.set_dispatcher(None)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _wait_for_job(
    client: TestClient, job_id: str, logs: Path, timeout: float = 300.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return dict(job)
        time.sleep(1.0)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs.glob("*.log"))
    raise AssertionError(f"job {job_id} did not finish in {timeout}s: {job}\n{tails}")


COMPONENTS = (
    "startup_s",
    "model_fetch_s",
    "input_download_s",
    "train_s",
    "evaluate_s",
    "export_s",
    "checkpoint_upload_s",
)


def _assert_every_phase_accounts_for_its_billed_time(job_id: str, phases: dict[str, Any]) -> None:
    """Each run's components, measured in its worker, add up to the seconds the job store
    billed for the phase (claim to release); other_s takes up only the small rest."""
    with session_scope() as session:
        billed = {
            p.name: p.billed_seconds
            for p in session.scalars(select(Phase).where(Phase.job_id == job_id))
        }
    for name, phase in phases.items():
        timing = phase["timing"]
        assert (timing["attempt"], timing["outcome"], timing["runs"]) == (1, "succeeded", 1)
        assert timing["billing"] == "claim_to_release"
        named = sum(timing[c] for c in COMPONENTS)
        assert abs(named + timing["other_s"] - billed[name]) < 1.0, (name, timing)
        assert named <= timing["billed_s"] + 1.0, (name, timing)  # nothing counted twice
        assert timing["startup_s"] > 0 and timing["train_s"] > 0, (name, timing)
        assert timing["samples"] > 0 and timing["tokens"] > 0, (name, timing)
        assert timing["input_bytes"] > 0 and timing["checkpoints"] >= 1, (name, timing)
        assert timing["device"] and timing["peak_memory_bytes"] > 0, (name, timing)
        print(
            f"{name}: "
            + ", ".join(f"{k}={timing[k]:.2f}" for k in (*COMPONENTS, "other_s", "billed_s"))
        )
    assert phases["final"]["timing"]["evaluate_s"] > 0
    assert phases["final"]["timing"]["export_s"] > 0
    assert phases["warmup"]["timing"]["precision"] == phases["final"]["timing"]["precision"]


@pytest.mark.e2e
def test_example_runs_through_three_pools_and_the_adapter_loads(
    clean_db: None,
    workers: dict[str, str],
    tiny_model_dir: str,
    example_dir: Path,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key()}"
        upload = client.post("/v1/datasets", files={"file": ("ex.zip", zip_folder(example_dir))})
        assert upload.status_code == 201, upload.text
        submitted = client.post(
            "/v1/jobs", json={"dataset_id": upload.json()["id"], "base_model": tiny_model_dir}
        )
        assert submitted.status_code == 201, submitted.text
        job = _wait_for_job(client, submitted.json()["id"], Path(workers["logs"]))
        logs = "\n".join(p.read_text() for p in Path(workers["logs"]).glob("*.log"))
        assert job["status"] == "succeeded", (job, logs[-4000:])

        phases = {p["name"]: p for p in job["phases"]}
        assert [phases[n]["pool"] for n in ("preprocess", "warmup", "final")] == list(POOLS)
        assert all(p["status"] == "succeeded" and p["attempt"] == 1 for p in phases.values())
        assert all(float(p["cost"]["amount"]) > 0 for p in phases.values())
        # each phase ran in the worker of its own pool
        started_events = [
            e
            for e in client.get(f"/v1/jobs/{job['id']}/events").json()
            if e["type"] == "phase_started"
        ]
        assert [(e["phase"], e["data"]["worker_id"].split("@")[0]) for e in started_events] == [
            ("preprocess", "t4"),
            ("warmup", "a10"),
            ("final", "a100"),
        ]
        assert phases["warmup"]["progress"]["epoch"] < phases["final"]["progress"]["epoch"]
        kinds = {
            (c["phase"], c["kind"]) for c in client.get(f"/v1/jobs/{job['id']}/checkpoints").json()
        }
        assert {("preprocess", "artifact"), ("final", "adapter")} <= kinds
        evaluation = client.get(f"/v1/jobs/{job['id']}/evaluation").json()
        assert evaluation["schema"] == "relaytune.evaluation.v1"
        assert evaluation["num_samples"] >= 1
        assert {"exact_match", "token_accuracy", "rouge_l", "val_loss"} <= set(
            evaluation["adapter"]
        )
        events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()
        assert any(e["type"] == "evaluation" for e in events)
        adapter = client.get(f"/v1/jobs/{job['id']}/adapter")
        assert adapter.status_code == 200
        # The run's timings now profile the next estimate of the same job.
        quote = client.post(
            "/v1/estimates", json={"dataset_id": upload.json()["id"], "base_model": tiny_model_dir}
        ).json()
        requested = next(p for p in quote["plans"] if p["name"] == "requested")
        assert [p["sources"] for p in requested["phases"]] == [["measured"]] * 3, requested
    _assert_every_phase_accounts_for_its_billed_time(job["id"], phases)
    adapter_dir = tmp_path / "adapter"
    zipfile.ZipFile(io.BytesIO(adapter.content)).extractall(adapter_dir)
    assert (adapter_dir / "adapter_config.json").is_file()
    assert (adapter_dir / "adapter_model.safetensors").is_file()

    loaded = subprocess.run(
        [sys.executable, "-c", LOAD_AND_GENERATE, tiny_model_dir, str(adapter_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert "GENERATED:" in loaded.stdout
    print(f"end-to-end wall time: {time.monotonic() - started:.1f}s")
