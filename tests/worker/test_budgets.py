"""Budgets on real workers: a phase that would pass its job's max_cost (or its tenant's limit)
saves a checkpoint and stops; raising the budget and requeueing continues from that checkpoint
and ends with the adapter an unstopped run gives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from fastapi.testclient import TestClient
from sqlalchemy import select

from orchestrator import budgets, dispatch
from orchestrator.db import session_scope
from orchestrator.models import Event, Job, Pool
from orchestrator.storage import get_store
from services.api.main import create_app
from tests.factories import new_api_key, zip_folder
from tests.orchestrator import relay_helpers as relay
from worker.runner import run_phase

# 10 training samples, 8 per optimizer step: 2 steps per epoch, 4 in the warmup.
HP = {"warmup_epochs": 2, "total_epochs": 3, "augmentation": {"enabled": False}}
# At this price the a10 meter passes any small budget within milliseconds of its claim, so the
# warmup stops at its first step however fast the machine is; preprocess on a free t4 costs 0.
HUGE_A10_PRICE = "100000"


@pytest.fixture
def celery_worker_on_every_pool(private_broker_url: str) -> Iterator[None]:
    from worker.celery_app import app

    app.conf.broker_url = private_broker_url
    dispatch.set_dispatcher(dispatch.CeleryDispatcher(private_broker_url))
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        queues=["gpu.t4", "gpu.a10", "gpu.a100"],
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield
    dispatch.set_dispatcher(None)


@pytest.fixture
def api(clean_db: None) -> Iterator[TestClient]:
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key('acme')}"
        yield client


def _ok(response: Any) -> dict[str, Any]:
    assert response.status_code < 300, response.text
    return dict(response.json())


def _wait(api: TestClient, job_id: str, statuses: set[str], timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = _ok(api.get(f"/v1/jobs/{job_id}"))
        if job["status"] in statuses:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not {statuses} in {timeout}s: {job}")


def _final_adapter(job_id: str) -> dict[str, Any]:
    from safetensors.torch import load

    key = f"jobs/{job_id}/final/a1/adapter/adapter_model.safetensors"
    return dict(load(get_store().get_bytes(key)))


def test_a_budget_stop_saves_a_checkpoint_and_a_raised_budget_continues_from_it(
    api: TestClient,
    celery_worker_on_every_pool: None,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    import torch

    admin = {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}
    _ok(api.put("/v1/pools/t4", json={"hourly_price": "0"}, headers=admin))
    _ok(api.put("/v1/pools/a10", json={"hourly_price": HUGE_A10_PRICE}, headers=admin))
    dataset = _ok(api.post("/v1/datasets", files={"file": ("d.zip", zip_folder(example_dir))}))
    body = {"dataset_id": dataset["id"], "base_model": tiny_model_dir, "hyperparameters": HP}

    reference = _ok(api.post("/v1/jobs", json=body))["id"]
    assert _wait(api, reference, {"succeeded", "failed"})["status"] == "succeeded"

    job_id = _ok(api.post("/v1/jobs", json=body))["id"]
    patched = _ok(api.patch(f"/v1/jobs/{job_id}", json={"max_cost": "0.5"}))
    assert patched["max_cost"] == {"amount": "0.500000", "currency": "CNY"}
    job = _wait(api, job_id, {"failed", "succeeded"})
    preprocess, warmup, final = job["phases"]
    assert (preprocess["status"], warmup["status"], final["status"]) == (
        "succeeded",
        "failed",
        "pending",
    )
    assert warmup["error"]["code"] == "budget_exceeded"
    assert "of its max_cost 0.500000 CNY" in warmup["error"]["message"]
    assert warmup["progress"]["step"] == 1  # stopped at its first step, not at the end
    assert Decimal(job["cost"]["amount"]) >= Decimal("0.5")  # what it spent is on record
    saved = [
        (c["phase"], c["kind"], c["step"]) for c in api.get(f"/v1/jobs/{job_id}/checkpoints").json()
    ]
    assert ("warmup", "stop", 1) in saved

    # Requeueing under the same budget is refused at claim, before any model is loaded.
    _ok(api.post(f"/v1/jobs/{job_id}/phases/warmup/requeue"))
    refused = _wait(api, job_id, {"failed", "succeeded"})
    assert refused["phases"][1]["error"]["code"] == "budget_exceeded"
    assert "did not start" in refused["phases"][1]["error"]["message"]

    _ok(api.put("/v1/pools/a10", json={"hourly_price": "3"}, headers=admin))
    _ok(api.patch(f"/v1/jobs/{job_id}", json={"max_cost": "100000"}))
    _ok(api.post(f"/v1/jobs/{job_id}/phases/warmup/requeue"))
    done = _wait(api, job_id, {"failed", "succeeded"})
    assert done["status"] == "succeeded", done
    with session_scope() as session:
        steps = session.scalars(
            select(Event.data).where(
                Event.job_id == job_id,
                Event.type == "metrics",
                Event.phase == "warmup",
                Event.attempt == 3,
            )
        ).all()
    assert sorted(s["step"] for s in steps) == [2, 3, 4]  # continued after the stop at step 1

    resumed, unstopped = _final_adapter(job_id), _final_adapter(reference)
    assert resumed.keys() == unstopped.keys()
    for name, tensor in unstopped.items():
        assert torch.equal(resumed[name], tensor), name


def _submit(tenant_name: str, tiny_model_dir: str, example_dir: Path) -> tuple[str, str]:
    tenant_id = relay.new_tenant(tenant_name)
    job_id = relay.submit(
        tenant_id,
        base_model=tiny_model_dir,
        hyperparameters=HP,
        data=zip_folder(example_dir),
        filename="example.zip",
    )
    return tenant_id, job_id


def _run(job_id: str, phase: str, attempt: int = 1) -> None:
    run_phase(
        {"job_id": job_id, "phase": phase, "attempt": attempt, "pool": "x"},
        worker_id=f"test/{phase}/{attempt}",
    )


def _phases(job_id: str) -> list[tuple[str, str | None]]:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return [(p.status, p.error_code) for p in job.phases]


def test_a_job_that_spent_its_budget_fails_at_claim_before_loading_anything(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    example_dir: Path,
) -> None:
    # An allowed base model with no files anywhere: reaching the load would fail with
    # phase_error instead.
    tenant_id, job_id = _submit("acme", "m", example_dir)
    with session_scope() as session:
        budgets.set_max_cost(session, tenant_id, job_id, Decimal(0))
    _run(job_id, "preprocess")
    assert _phases(job_id)[0] == ("failed", "budget_exceeded")
    assert not get_store().list(f"jobs/{job_id}/preprocess/")


def test_the_tenants_spending_limit_stops_a_running_warmup(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    with session_scope() as session:
        session.get(Pool, "t4").hourly_price = Decimal(0)  # type: ignore[union-attr]
        session.get(Pool, "a10").hourly_price = Decimal(HUGE_A10_PRICE)  # type: ignore[union-attr]
    _, job_id = _submit("acme", tiny_model_dir, example_dir)
    with session_scope() as session:
        budgets.set_spending_limit(session, "acme", amount=Decimal(1), period_days=30)
    _run(job_id, "preprocess")
    _run(job_id, "warmup")
    assert _phases(job_id)[1] == ("failed", "spending_limit_exceeded")
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed"
        assert job.phases[1].resume_key and "/stop-1" in job.phases[1].resume_key
        assert "spending limit 1.000000 CNY over the last 30 days" in (job.error_message or "")
