"""A job names a base model the server knows, and is checked against it at submit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Job


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/estimates"])
def test_server_paths_all_give_the_same_unknown_model_error(
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
    route: str,
) -> None:
    messages = {}
    for name in ("/etc", "../../etc/passwd", "/nonexistent", "no-such-model"):
        response = client.post(route, json={"dataset_id": dataset_id, "base_model": name})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("unknown_model", "base_model")
        assert "tiny-qwen3-vl" in error["message"]  # the names it may use instead
        messages[name] = error["message"].replace(f"'{name}'", "'…'")
    assert len(set(messages.values())) == 1, messages
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


def test_a_model_under_the_root_is_named_never_shown_by_its_path(
    client: TestClient, dataset_id: str, tiny_model_dir: str, model_root: Path
) -> None:
    mine = model_root / "my-vlm"
    if not mine.exists():
        shutil.copytree(tiny_model_dir, mine)
    for given, shown in (
        (str(mine), "my-vlm"),
        (tiny_model_dir, "tiny-qwen3-vl"),
        ("my-vlm", "my-vlm"),
        (None, "tiny-qwen3-vl"),
    ):
        body: dict[str, Any] = {"dataset_id": dataset_id}
        if given is not None:
            body["base_model"] = given
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 201, response.text
        job = response.json()
        assert job["base_model"] == shown
        events = client.get(f"/v1/jobs/{job['id']}/events").json()
        assert events[0]["data"]["base_model"] == shown
        assert str(model_root) not in str(job) + str(events)


@pytest.mark.parametrize(
    ("hyperparameters", "param"),
    [
        ({"target_modules": ["q_proj", "qkv"]}, "hyperparameters.target_modules"),
        ({"target_modules": ["c_attn"]}, "hyperparameters.target_modules"),
        ({"min_pixels": 1_000_000}, "hyperparameters.min_pixels"),
        ({"min_pixels": 2_000_000, "max_pixels": 1_000_000}, "hyperparameters"),
        ({"validation_samples": 3}, "hyperparameters.validation_samples"),
        ({"seed": 2**32}, "hyperparameters.seed"),
    ],
)
def test_what_a_worker_would_refuse_is_refused_at_submit(
    client: TestClient,
    dataset_id: str,
    tiny_model_dir: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
    hyperparameters: dict[str, Any],
    param: str,
) -> None:
    for route in ("/v1/jobs", "/v1/estimates"):
        response = client.post(
            route,
            json={
                "dataset_id": dataset_id,
                "base_model": "tiny-qwen3-vl",
                "hyperparameters": hyperparameters,
            },
        )
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


def test_targets_the_model_has_are_accepted(
    client: TestClient, dataset_id: str, tiny_model_dir: str
) -> None:
    for targets in (["q_proj", "k_proj", "down_proj"], "all-linear"):
        response = client.post(
            "/v1/jobs",
            json={
                "dataset_id": dataset_id,
                "hyperparameters": {
                    "target_modules": targets,
                    "min_pixels": 1024,
                    "max_pixels": 65536,
                },
            },
        )
        assert response.status_code == 201, response.text
