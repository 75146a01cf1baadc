"""GET /v1/models in OpenAI's shape, and jobs that name a registered model."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from orchestrator import storage
from orchestrator.db import session_scope
from orchestrator.model_registry import add_model


def _register(name: str, directory: str) -> str:
    with session_scope() as session:
        model, _ = add_model(session, storage.get_store(), name, Path(directory))
        return model.digest


def test_models_are_listed_in_openais_shape(client: TestClient, tiny_model_dir: str) -> None:
    assert client.get("/v1/models").json() == {"object": "list", "data": []}
    digest = _register("team/tiny", tiny_model_dir)
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert {k: model[k] for k in ("id", "object", "owned_by", "digest")} == {
        "id": "team/tiny",
        "object": "model",
        "owned_by": "relaytune",
        "digest": digest,
    }
    assert isinstance(model["created"], int) and model["created"] > 0
    assert model["architecture"] == "Qwen3VLForConditionalGeneration"
    assert model["parameter_count"] > 0 and model["total_bytes"] > 0
    assert "q_proj" in model["lora_target_modules"]


def test_models_need_a_key(client: TestClient) -> None:
    response = client.get("/v1/models", headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_a_job_may_name_a_registered_model(
    client: TestClient, dataset_id: str, tiny_model_dir: str
) -> None:
    # the estimator finds a model's shape by its name, as it does for every base model
    name = "team/tiny-qwen3-vl"
    _register(name, tiny_model_dir)
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": name})
    assert response.status_code == 201, response.text
    assert response.json()["base_model"] == name
    estimate = client.post("/v1/estimates", json={"dataset_id": dataset_id, "base_model": name})
    assert estimate.status_code == 200, estimate.text


def test_a_registered_models_config_checks_the_job(
    client: TestClient, dataset_id: str, tiny_model_dir: str
) -> None:
    _register("team/tiny", tiny_model_dir)
    response = client.post(
        "/v1/jobs",
        json={
            "dataset_id": dataset_id,
            "base_model": "team/tiny",
            "hyperparameters": {"target_modules": ["not_a_layer"]},
        },
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"] == "hyperparameters.target_modules"


def test_the_unknown_model_error_lists_registered_names(
    client: TestClient, dataset_id: str, tiny_model_dir: str
) -> None:
    _register("team/tiny", tiny_model_dir)
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "nope"})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_model"
    assert "team/tiny" in error["message"] and "tiny-qwen3-vl" in error["message"]
