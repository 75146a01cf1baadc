"""The request commits before it answers: a change the store did not keep is never a 201."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Dataset, Job
from orchestrator.storage import get_store
from services.api.main import create_app
from tests.factories import dataset_zip, new_api_key


@contextmanager
def refusing_commits() -> Iterator[None]:
    """Every commit inside the block fails like one to a database that just went away."""

    def refuse(_: Session) -> None:
        raise OperationalError("COMMIT", {}, Exception("server closed the connection"))

    event.listen(Session, "before_commit", refuse)
    try:
        yield
    finally:
        event.remove(Session, "before_commit", refuse)


@pytest.fixture
def server(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> Iterator[TestClient]:
    # Server errors come back as responses, as a client sees them, not as raised exceptions.
    with TestClient(create_app(), raise_server_exceptions=False) as test_client:
        test_client.headers["Authorization"] = f"Bearer {new_api_key()}"
        yield test_client


def _count(model: Any) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def _assert_unavailable(response: Any) -> None:
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "unavailable"
    assert error["message"]


def test_upload_whose_commit_fails_is_not_reported_created(server: TestClient) -> None:
    with refusing_commits():
        response = server.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
    _assert_unavailable(response)
    assert _count(Dataset) == 0
    assert get_store().list("datasets/") == []  # nor an object without its row


def test_job_whose_commit_fails_is_neither_created_nor_sent(
    server: TestClient,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    upload = server.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
    assert upload.status_code == 201, upload.text
    with refusing_commits():
        response = server.post("/v1/jobs", json={"dataset_id": upload.json()["id"]})
    _assert_unavailable(response)
    assert _count(Job) == 0
    assert recorded_dispatch.sent == []
