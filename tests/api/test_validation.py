"""Hostile and careless input at the door: every bad body is a 4xx naming what is wrong, and
nothing is created."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Job

TINY = "tiny-qwen3-vl"


def _job_count() -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def _refused(response: Any, param: str) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["param"] == param, error
    assert error["message"]
    return error


@pytest.mark.parametrize("route", ["/v1/jobs", "/v1/estimates"])
def test_unknown_top_level_field_is_refused(
    client: TestClient, dataset_id: str, recorded_dispatch: dispatch.RecordingDispatcher,
    route: str,
) -> None:
    body = {"dataset_id": dataset_id, "hyperparams": {"lora_rank": 4}}
    error = _refused(client.post(route, json=body), "hyperparams")
    assert "hyperparams" in error["message"] and "unknown field" in error["message"]
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/phases/warmup/requeue", {"from": "input", "force": True}, "force"),
        ("", {"max_cost": "1", "budget": "2"}, "budget"),
    ],
)
def test_unknown_fields_of_other_bodies_are_refused(
    client: TestClient, dataset_id: str, path: str, body: dict[str, Any], param: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    method = client.post if path else client.patch
    _refused(method(f"/v1/jobs/{job_id}{path}", json=body), param)
