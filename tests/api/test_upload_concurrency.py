"""A data set being validated does not stall the API: other requests are answered meanwhile."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator import datasets
from tests.factories import dataset_zip

# Only a bound on how long a stalled test hangs before it fails; nothing is timed.
GIVE_UP_S = 20


def test_health_answers_while_an_upload_is_being_validated(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started, released, gave_up = threading.Event(), threading.Event(), threading.Event()
    real_validate = datasets.validate_dataset_zip

    def slow_validate(*args: Any, **kwargs: Any) -> Any:
        started.set()
        if not released.wait(GIVE_UP_S):  # held until the test has its /healthz answer
            gave_up.set()
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(datasets, "validate_dataset_zip", slow_validate)
    uploads: list[Any] = []
    uploader = threading.Thread(
        target=lambda: uploads.append(
            client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
        )
    )
    uploader.start()
    try:
        assert started.wait(GIVE_UP_S), "the upload never reached validation"
        health = client.get("/healthz")
        # Answered while validation still held its latch: the event loop was free.
        answered_during_validation = not gave_up.is_set()
    finally:
        released.set()
        uploader.join(GIVE_UP_S)
    assert health.status_code == 200
    assert answered_during_validation
    assert uploads and uploads[0].status_code == 201, uploads
