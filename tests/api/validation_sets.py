"""What the tests of a job's validation data set share: uploading a data set, and the ways a
validation data set is refused, alike by POST /v1/jobs and POST /v1/estimates."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import dataset_zip, new_api_key


def upload(client: TestClient, data: bytes, **headers: str) -> str:
    response = client.post("/v1/datasets", files={"file": ("d.zip", data)}, headers=headers)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def refused_validation_sets(held_out: dict[str, Any]) -> pytest.MarkDecorator:
    """Parametrizes (validation, extra, status, param): `validation(client, dataset_id)` gives
    the id to send, `extra` more of the body, then the refusal's status and its param."""

    def deleted(client: TestClient) -> str:
        gone = upload(client, dataset_zip(held_out))
        assert client.delete(f"/v1/datasets/{gone}").status_code == 204
        return gone

    def another_tenants(client: TestClient) -> str:
        key = new_api_key("globex")
        return upload(client, dataset_zip(held_out), Authorization=f"Bearer {key}")

    return pytest.mark.parametrize(
        ("validation", "extra", "status", "param"),
        [
            (lambda c, d: "nope", {}, 404, "validation_dataset_id"),
            (lambda c, d: another_tenants(c), {}, 404, "validation_dataset_id"),
            (lambda c, d: deleted(c), {}, 404, "validation_dataset_id"),
            (lambda c, d: d, {}, 422, "validation_dataset_id"),
            (
                lambda c, d: upload(c, dataset_zip(held_out)),
                {"hyperparameters": {"validation_samples": 1}},
                422,
                "hyperparameters.validation_samples",
            ),
        ],
        ids=[
            "unknown",
            "another_tenants",
            "deleted",
            "the_training_set",
            "with_validation_samples",
        ],
    )
