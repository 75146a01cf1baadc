from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from orchestrator import dispatch
from services.api.main import create_app
from tests.factories import dataset_zip, new_api_key


@pytest.fixture
def client(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> Iterator[TestClient]:
    with TestClient(create_app()) as test_client:
        test_client.headers["Authorization"] = f"Bearer {new_api_key()}"
        yield test_client


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    response = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
