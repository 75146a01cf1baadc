"""Idempotency-Key on POST /v1/jobs and POST /v1/datasets: a retry gets the first result back
and creates nothing; a reused key, a key in flight and a bad key are refused plainly."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from orchestrator import datasets, dispatch, idempotency, jobs, storage
from orchestrator.db import session_scope
from orchestrator.models import Dataset, IdempotencyKey, Job, utcnow
from tests.factories import dataset_zip, new_api_key

# Only a bound on how long a stalled test hangs before it fails; nothing is timed.
GIVE_UP_S = 20


def _submit(client: TestClient, dataset_id: str, key: str | None, **extra: Any) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return client.post(
        "/v1/jobs", headers=headers, json={"dataset_id": dataset_id, "base_model": "tiny", **extra}
    )


def _upload(
    client: TestClient, key: str, data: bytes, name: str = "d.zip", **headers: str
) -> httpx.Response:
    return client.post(
        "/v1/datasets", headers={"Idempotency-Key": key, **headers}, files={"file": (name, data)}
    )


def _count(model: Any) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def _error(response: httpx.Response) -> tuple[int, str, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_a_retried_job_gets_the_first_result_and_creates_nothing(
    client: TestClient,
    dataset_id: str,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    first = _submit(client, dataset_id, "job-1", metadata={"run": "a"})
    assert first.status_code == 201, first.text
    assert "Idempotent-Replayed" not in first.headers
    # The same request again, its fields in another order: still the same request.
    again = client.post(
        "/v1/jobs",
        headers={"Idempotency-Key": "job-1"},
        json={"metadata": {"run": "a"}, "base_model": "tiny", "dataset_id": dataset_id},
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert _count(Job) == 1
    assert len(recorded_dispatch.sent) == 1
    # A new key is a new job.
    other = _submit(client, dataset_id, "job-2", metadata={"run": "a"})
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    assert _count(Job) == 2


def test_a_retried_upload_gets_the_first_result_without_validating_or_storing_again(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    validated = []
    real_validate = datasets.validate_dataset_zip

    def counting(*args: Any, **kwargs: Any) -> Any:
        validated.append(1)
        return real_validate(*args, **kwargs)

    monkeypatch.setattr(datasets, "validate_dataset_zip", counting)
    data = dataset_zip()
    first = _upload(client, "upload-1", data)
    assert first.status_code == 201, first.text
    again = _upload(client, "upload-1", data)
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(validated) == 1
    assert _count(Dataset) == 1
    assert len(storage.get_store().list("datasets/")) == 1


def test_reusing_a_key_for_another_request_is_refused(client: TestClient, dataset_id: str) -> None:
    assert _submit(client, dataset_id, "k").status_code == 201
    reused = _submit(client, dataset_id, "k", metadata={"run": "b"})
    assert _error(reused) == (422, "idempotency_key_reused", "Idempotency-Key")
    assert "different POST /v1/jobs request" in reused.json()["error"]["message"]
    data = dataset_zip()
    assert _upload(client, "u", data).status_code == 201
    # Another file, or the same file under another name, is another upload.
    assert _error(_upload(client, "u", dataset_zip(folder="data/")))[1] == "idempotency_key_reused"
    assert _error(_upload(client, "u", data, name="other.zip"))[1] == "idempotency_key_reused"
    assert (_count(Job), _count(Dataset)) == (1, 2)  # the fixture's data set and "u"


def test_keys_are_scoped_to_the_tenant_and_the_route(client: TestClient, dataset_id: str) -> None:
    data = dataset_zip()
    mine = _upload(client, "shared", data)
    theirs = _upload(client, "shared", data, Authorization=f"Bearer {new_api_key('beta')}")
    assert mine.status_code == theirs.status_code == 201
    assert mine.json()["id"] != theirs.json()["id"]
    # The same key on the jobs route is a key of its own.
    job = _submit(client, dataset_id, "shared")
    assert job.status_code == 201 and job.json()["id"] != mine.json()["id"]
    assert (_count(Dataset), _count(Job), _count(IdempotencyKey)) == (3, 1, 3)


def test_a_failed_request_records_nothing_and_may_be_retried(
    client: TestClient, dataset_id: str
) -> None:
    missing = _submit(client, "no-such-dataset", "retry-me")
    assert _error(missing) == (404, "not_found", "dataset_id")
    assert _count(IdempotencyKey) == 0
    assert _submit(client, dataset_id, "retry-me").status_code == 201


@pytest.mark.parametrize(("key", "says"), [("", "is empty"), ("k" * 256, "at most 255")])
def test_a_bad_key_is_refused_in_the_envelope(
    client: TestClient, dataset_id: str, key: str, says: str
) -> None:
    response = _submit(client, dataset_id, key)
    assert _error(response) == (422, "invalid_idempotency_key", "Idempotency-Key")
    assert says in response.json()["error"]["message"]
    assert _error(_upload(client, key, dataset_zip()))[1] == "invalid_idempotency_key"
    assert _count(Job) == 0
    assert _submit(client, dataset_id, "k" * 255).status_code == 201


def test_a_key_expires_after_a_day(client: TestClient, dataset_id: str) -> None:
    first = _submit(client, dataset_id, "daily")
    stale = _submit(client, dataset_id, "old-and-forgotten")
    with session_scope() as session:
        session.execute(
            update(IdempotencyKey).values(
                created_at=utcnow() - idempotency.KEY_TTL - timedelta(minutes=1)
            )
        )
    # Past its lifetime the key starts over, even for another request...
    again = _submit(client, dataset_id, "daily", metadata={"run": "next day"})
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert "Idempotent-Replayed" not in again.headers
    assert _count(Job) == 3 and stale.status_code == 201
    # ...and results past their lifetime are forgotten as new ones are recorded.
    with session_scope() as session:
        assert session.scalars(select(IdempotencyKey.key)).all() == ["daily"]


def test_a_failure_after_recording_leaves_neither_the_job_nor_its_record(
    client: TestClient,
    dataset_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_record = idempotency._record

    def record_then_fail(*args: Any) -> None:
        real_record(*args)
        raise RuntimeError("the server died after recording")

    monkeypatch.setattr(idempotency, "_record", record_then_fail)
    with pytest.raises(RuntimeError):
        _submit(client, dataset_id, "atomic")
    assert (_count(Job), _count(IdempotencyKey)) == (0, 0)
    monkeypatch.setattr(idempotency, "_record", real_record)
    assert _submit(client, dataset_id, "atomic").status_code == 201


def _hold_first_call(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str
) -> tuple[threading.Event, threading.Event]:
    """Make the first call of owner.name wait (until released) once it has started."""
    entered, release = threading.Event(), threading.Event()
    real = getattr(owner, name)
    calls = []

    def held(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            entered.set()
            release.wait(GIVE_UP_S)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, held)
    return entered, release


def _in_background(send: Any) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(send()))
    thread.start()
    return thread, answers


def test_a_duplicate_while_the_first_is_in_flight_is_told_to_retry(
    client: TestClient,
    dataset_id: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    entered, release = _hold_first_call(monkeypatch, jobs, "submit_job")
    thread, first = _in_background(lambda: _submit(client, dataset_id, "busy"))
    try:
        assert entered.wait(GIVE_UP_S), "the first request never started"
        duplicate = _submit(client, dataset_id, "busy")
    finally:
        release.set()
        thread.join(GIVE_UP_S)
    assert _error(duplicate) == (409, "idempotency_request_in_progress", "Idempotency-Key")
    assert first and first[0].status_code == 201
    retried = _submit(client, dataset_id, "busy")
    assert (retried.status_code, retried.json()) == (201, first[0].json())
    assert _count(Job) == 1


def test_without_a_key_lock_the_unique_record_still_lets_one_job_through(
    client: TestClient,
    dataset_id: str,
    monkeypatch: pytest.MonkeyPatch,
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    """Where the store has no transaction lock for a key (SQLite), both requests run; the one
    that records second is rolled back whole and answers with the first one's result."""
    monkeypatch.setattr(idempotency, "_lock", lambda *args: None)
    entered, release = _hold_first_call(monkeypatch, jobs, "submit_job")
    thread, held = _in_background(lambda: _submit(client, dataset_id, "race"))
    try:
        assert entered.wait(GIVE_UP_S), "the first request never started"
        winner = _submit(client, dataset_id, "race")
    finally:
        release.set()
        thread.join(GIVE_UP_S)
    assert winner.status_code == 201
    assert held and (held[0].status_code, held[0].json()) == (201, winner.json())
    assert held[0].headers["Idempotent-Replayed"] == "true"
    assert _count(Job) == 1
    assert len(recorded_dispatch.sent) == 1  # the loser's queued phase was never sent


def test_a_racing_upload_that_loses_leaves_no_stored_object(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(idempotency, "_lock", lambda *args: None)
    entered, release = _hold_first_call(monkeypatch, datasets, "validate_dataset_zip")
    data = dataset_zip()
    thread, held = _in_background(lambda: _upload(client, "race", data))
    try:
        assert entered.wait(GIVE_UP_S), "the first upload never started"
        winner = _upload(client, "race", data)
    finally:
        release.set()
        thread.join(GIVE_UP_S)
    assert held and (held[0].status_code, held[0].json()) == (201, winner.json())
    assert _count(Dataset) == 1
    assert storage.get_store().list("datasets/") == [f"datasets/{winner.json()['id']}/upload.zip"]
