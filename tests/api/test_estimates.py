"""Estimates before a job, the planner's pools "auto", and the submit-side budget."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Job

EIGHT_B = "/models/Qwen3-VL-8B-Instruct"


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def _estimate(client: TestClient, dataset_id: str, **extra: Any) -> Any:
    return client.post(
        "/v1/estimates", json={"dataset_id": dataset_id, "base_model": EIGHT_B, **extra}
    )


def test_estimate_answers_the_plans_side_by_side_and_creates_nothing(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    response = _estimate(client, dataset_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_key"] == "qwen3-vl-8b"
    assert body["chosen"] == "requested"
    plans = {p["name"]: p for p in body["plans"]}
    assert list(plans) == ["requested", "relay", "all-t4", "all-a10", "all-a100", "cheapest"]
    assert plans["requested"]["pools"] == {"preprocess": "t4", "warmup": "a10", "final": "a100"}
    assert not plans["all-t4"]["feasible"]
    assert "8b weights in fp16 need 16.3 GiB" in plans["all-t4"]["reason"]
    for plan in plans.values():
        phases_cost = sum(Decimal(p["cost"]["amount"]) for p in plan["phases"])
        assert Decimal(plan["cost"]["amount"]) == phases_cost
        assert plan["cost"]["currency"] == "CNY"
    warmup = plans["requested"]["phases"][1]
    assert warmup["precision"] == "bf16" and warmup["sources"] == ["derived"]
    assert set(warmup["seconds"]) >= {"startup", "input_download", "train", "checkpoint_upload"}
    assert body["top_tier"] == "all-a100"
    saving = body["saving_vs_top_tier"]
    top, requested = (Decimal(plans[n]["cost"]["amount"]) for n in ("all-a100", "requested"))
    assert Decimal(saving["amount"]["amount"]) == top - requested
    assert {q["pool"] for q in body["queues"]} == {"t4", "a10", "a100"}
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


def test_queue_depth_counts_phases_waiting_on_a_pool(client: TestClient, dataset_id: str) -> None:
    client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny"})
    queues = {q["pool"]: q for q in _estimate(client, dataset_id).json()["queues"]}
    assert queues["t4"]["queued_phases"] == 1
    assert queues["t4"]["expected_wait_s"] > 0
    assert queues["a100"]["queued_phases"] == 0


@pytest.mark.parametrize(
    ("extra", "code", "param"),
    [
        (
            {"hyperparameters": {"total_epochs": 0}},
            "invalid_request",
            "hyperparameters.total_epochs",
        ),
        (
            {"hyperparameters": {"validation_samples": 3}},
            "invalid_request",
            "hyperparameters.validation_samples",
        ),
        (
            {"hyperparameters": {"checkpoint_interval_seconds": 5e-324}},
            "invalid_request",
            "hyperparameters.checkpoint_interval_seconds",
        ),
        ({"pools": {"warmup": "h100"}}, "unknown_pool", "pools.warmup"),
        ({"pools": "fastest"}, "invalid_request", "pools"),
        ({"max_cost": "-1"}, "invalid_request", "max_cost"),
        ({"base_model": "my-own-vlm"}, "unknown_model", "base_model"),
        ({"dataset_id": "nope"}, "not_found", "dataset_id"),
    ],
)
def test_bad_estimate_request_is_refused(
    client: TestClient, dataset_id: str, extra: dict[str, Any], code: str, param: str
) -> None:
    body = {"dataset_id": dataset_id, "base_model": EIGHT_B, **extra}
    response = client.post("/v1/estimates", json=body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == (code, param)
    assert error["message"]
    assert _job_count() == 0


def test_auto_pools_run_the_cheapest_plan_and_record_it(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    quote = _estimate(client, dataset_id, pools="auto").json()
    cheapest = next(p for p in quote["plans"] if p["name"] == "cheapest")
    response = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "base_model": EIGHT_B, "pools": "auto"}
    )
    assert response.status_code == 201, response.text
    job = response.json()
    assert {p["name"]: p["pool"] for p in job["phases"]} == cheapest["pools"]
    plan = job["plan"]
    assert plan["name"] == "auto"
    assert plan["estimated_cost"] == cheapest["cost"]
    assert "all-a100" in plan["alternatives"] and "all-t4" not in plan["alternatives"]
    for phase in job["phases"]:
        assert phase["estimate"]["pool"] == phase["pool"]
        assert phase["estimate"]["cost"]["currency"] == "CNY"
    assert (
        client.get(f"/v1/jobs/{job['id']}").json()["phases"][1]["estimate"]
        == (job["phases"][1]["estimate"])
    )
    assert recorded_dispatch.sent[0].queue == f"gpu.{cheapest['pools']['preprocess']}"


def test_requested_pools_store_the_estimate_too(client: TestClient, dataset_id: str) -> None:
    job = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": EIGHT_B}).json()
    assert job["plan"]["name"] == "requested"
    assert Decimal(job["plan"]["estimated_cost"]["amount"]) == sum(
        Decimal(p["estimate"]["cost"]["amount"]) for p in job["phases"]
    )


def test_a_model_without_a_shape_still_submits_without_an_estimate(
    client: TestClient, dataset_id: str
) -> None:
    job = client.post(
        "/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny", "pools": "auto"}
    ).json()
    assert [p["pool"] for p in job["phases"]] == ["t4", "a10", "a100"]
    assert job["plan"]["name"] == "relay"
    assert all(p["estimate"] is None for p in job["phases"])


def test_a_job_without_samples_left_to_train_is_refused_at_submit(
    client: TestClient, dataset_id: str
) -> None:
    response = client.post(
        "/v1/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": "tiny",
            "hyperparameters": {"validation_samples": 3},
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "hyperparameters.validation_samples"
    assert _job_count() == 0


def test_a_phase_that_cannot_fit_its_pool_is_refused(client: TestClient, dataset_id: str) -> None:
    response = client.post(
        "/v1/jobs",
        json={"dataset_id": dataset_id, "base_model": EIGHT_B, "pools": {"warmup": "t4"}},
    )
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("plan_infeasible", "pools.warmup")
    assert "16.3 GiB" in error["message"]
    assert _job_count() == 0


def test_budget_below_the_cheapest_estimate_is_refused_with_the_estimate(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    quote = _estimate(client, dataset_id).json()
    cheapest = Decimal(next(p for p in quote["plans"] if p["name"] == "cheapest")["cost"]["amount"])
    body = {"dataset_id": dataset_id, "base_model": EIGHT_B}
    response = client.post("/v1/jobs", json={**body, "max_cost": str(cheapest / 2)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("budget_too_low", "max_cost")
    assert Decimal(error["details"][0]["cost"]["amount"]) == cheapest
    assert _job_count() == 0 and recorded_dispatch.sent == []

    response = client.post("/v1/jobs", json={**body, "max_cost": str(cheapest * 10)})
    assert response.status_code == 201, response.text
    with session_scope() as session:
        job = session.get(Job, response.json()["id"])
        assert job is not None and job.max_cost == cheapest * 10


def test_profiles_list_each_model_on_each_pool_with_its_source(client: TestClient) -> None:
    response = client.get("/v1/profiles")
    assert response.status_code == 200, response.text
    rows = {(r["model_key"], r["pool"], r["phase"]): r for r in response.json()}
    eight_a10 = rows["qwen3-vl-8b", "a10", "training"]
    assert eight_a10["source"] == "derived" and eight_a10["train_samples_per_s"] > 0
    assert eight_a10["feasible"] and eight_a10["precision"] == "bf16"
    eight_t4 = rows["qwen3-vl-8b", "t4", "training"]
    assert not eight_t4["feasible"] and eight_t4["source"] is None
    assert rows["tiny-qwen3-vl", "a100", "training"]["source"] == "default"
    assert rows["qwen3-vl-2b", "t4", "preprocess"]["feasible"]
    one = client.get("/v1/profiles", params={"base_model": EIGHT_B, "all_linear": True}).json()
    assert {r["lora_targets"] for r in one if r["source"]} == {"all-linear"}


def test_profiles_size_a_registered_model_by_its_config_and_show_its_fetch(
    client: TestClient, tiny_model_dir: str
) -> None:
    """A name of its own (no catalog shape, no run yet) is listed from its recorded config;
    preprocessing fetches less of it than training (no weights); catalog models fetch none."""
    from pathlib import Path

    from orchestrator.model_registry import add_model
    from orchestrator.storage import get_store

    with session_scope() as session:
        add_model(session, get_store(), "acme-vl", Path(tiny_model_dir))
    listed = client.get("/v1/profiles").json()
    mine = {(r["pool"], r["phase"]): r for r in listed if r["base_model"] == "acme-vl"}
    assert mine and all(r["model_key"] == "acme-vl" for r in mine.values())
    for pool in ("t4", "a10", "a100"):
        preprocess, training = mine[pool, "preprocess"], mine[pool, "training"]
        assert 0 < preprocess["model_fetch_s"] < training["model_fetch_s"]
        assert training["sources"]["model_fetch"] == "default"
    catalog = [r for r in listed if r["base_model"] == "qwen3-vl-8b" and r["source"]]
    assert catalog and {r["model_fetch_s"] for r in catalog} == {0}
    one = client.get("/v1/profiles", params={"base_model": "acme-vl"}).json()
    assert {(r["pool"], r["phase"]) for r in one} == set(mine)
