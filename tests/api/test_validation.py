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
from orchestrator.settings import get_settings
from tests.factories import dataset_zip, new_api_key, png_bytes

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
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
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


@pytest.mark.parametrize(
    ("raw_hyperparameters", "param"),
    [
        ('{"lora_alpha": Infinity}', "hyperparameters.lora_alpha"),
        ('{"learning_rate": NaN}', "hyperparameters.learning_rate"),
        ('{"max_grad_norm": -Infinity}', "hyperparameters.max_grad_norm"),
        ('{"lora_rank": true}', "hyperparameters.lora_rank"),
        ('{"batch_size": "2"}', "hyperparameters.batch_size"),
        ('{"total_epochs": 8.0}', "hyperparameters.total_epochs"),
        ('{"augmentation": {"copies": true}}', "hyperparameters.augmentation.copies"),
        ('{"seed": 1000000000000000000000000000000}', "hyperparameters.seed"),
        ('{"seed": -1}', "hyperparameters.seed"),
        ('{"validation_samples": 1000000000000}', "hyperparameters.validation_samples"),
        ('{"min_pixels": 1099511627776}', "hyperparameters.min_pixels"),
        (
            '{"checkpoint_every_steps": 100000000000000000000}',
            "hyperparameters.checkpoint_every_steps",
        ),
        ('{"keep_last_checkpoints": 1000000000}', "hyperparameters.keep_last_checkpoints"),
    ],
)
def test_non_finite_coerced_and_unbounded_numbers_are_refused(
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
    raw_hyperparameters: str,
    param: str,
) -> None:
    # Python's JSON reader takes Infinity and NaN, so the body is written by hand.
    body = f'{{"dataset_id": "{dataset_id}", "hyperparameters": {raw_hyperparameters}}}'
    for route in ("/v1/jobs", "/v1/estimates"):
        response = client.post(route, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert response.json()["error"]["param"] == param
    assert _job_count() == 0
    assert recorded_dispatch.sent == []


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/v1/jobs", {"offset": str(10**20)}, "offset"),
        ("/v1/jobs", {"offset": "1e20"}, "offset"),
        ("/v1/jobs/{job}/events", {"after": str(10**23)}, "after"),
        ("/v1/jobs/{job}/events", {"after": "1e23"}, "after"),
        ("/v1/jobs/{job}/events", {"after": "-1"}, "after"),
    ],
)
def test_huge_query_integers_are_a_422_not_an_overflow(
    client: TestClient, dataset_id: str, path: str, params: dict[str, str], param: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id}).json()["id"]
    response = client.get(path.format(job=job_id), params=params)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == param


def test_deeply_nested_json_is_refused_in_a_body_and_in_a_data_set(client: TestClient) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/v1/jobs",
        content=f'{{"dataset_id": "x", "metadata": {deep}}}',
        headers={"content-type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["code"]
    upload = dataset_zip(raw_annotations=deep.encode())
    response = client.post("/v1/datasets", files={"file": ("deep.zip", upload)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json"
    assert "nested too deeply" in error["message"] + str(error.get("details"))


def test_image_errors_name_the_file_not_a_heap_address(client: TestClient) -> None:
    annotations = {
        "broken.png": {"question": "Which part?", "answer": "none"},
        "fine.png": {"question": "Which part?", "answer": "a resistor"},
    }
    upload = dataset_zip(
        annotations, images={"broken.png": b"not an image at all", "fine.png": png_bytes()}
    )
    response = client.post("/v1/datasets", files={"file": ("d.zip", upload)})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["param"] == "images/broken.png" or "broken.png" in error["message"]
    assert "object at 0x" not in response.text and "_io." not in response.text


def test_metrics_need_the_metrics_token_or_an_admin_key(
    client: TestClient, dataset_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/v1/jobs", json={"dataset_id": dataset_id})
    anonymous = client.get("/metrics", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"
    assert "relaytune_jobs" not in anonymous.text
    tenant = client.get("/metrics")  # an ordinary tenant's key sees no one's totals
    assert tenant.status_code == 403
    admin = client.get(
        "/metrics", headers={"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}
    )
    assert admin.status_code == 200
    assert 'relaytune_jobs{status="queued"} 1.0' in admin.text
    monkeypatch.setenv("RELAYTUNE_METRICS_TOKEN", "scrape-secret")
    get_settings.cache_clear()
    try:
        scraper = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert scraper.status_code == 200 and "relaytune_jobs" in scraper.text
        wrong = client.get("/metrics", headers={"Authorization": "Bearer scrape-secreT"})
        assert wrong.status_code == 401
    finally:
        monkeypatch.delenv("RELAYTUNE_METRICS_TOKEN")
        get_settings.cache_clear()
