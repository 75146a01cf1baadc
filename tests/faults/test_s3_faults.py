"""An S3 endpoint that fails: requests are retried with backoff; a phase whose store keeps failing
is queued again while attempts remain, then fails with an error naming the store, never leaving
a checkpoint half visible."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import dispatch, jobs
from orchestrator.db import session_scope
from orchestrator.models import Event, Job
from orchestrator.storage import ObjectStoreUnavailable, S3Store, get_store
from tests.conftest import reset_caches
from tests.faults.fault_helpers import (
    assert_checkpoints_whole,
    checkpoint_rows,
    metric_steps,
    phase,
    submit,
)
from tests.faults.flaky_s3 import FlakyS3, Request, puts_under
from worker.runner import run_phase

ATTEMPTS = 3  # per request; the default is more, this keeps a store that stays down quick


@pytest.fixture(scope="module")
def flaky_s3(s3_endpoint: str) -> Iterator[FlakyS3]:
    with FlakyS3(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture
def through_proxy(
    clean_db: None, flaky_s3: FlakyS3, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FlakyS3]:
    """This process's object store, as a worker's, goes through the flaky proxy."""
    monkeypatch.setenv("RELAYTUNE_S3_ENDPOINT", flaky_s3.url)
    monkeypatch.setenv("RELAYTUNE_S3_MAX_ATTEMPTS", str(ATTEMPTS))
    reset_caches()
    flaky_s3.reset()
    yield flaky_s3
    flaky_s3.reset()
    monkeypatch.undo()
    reset_caches()


def _store(proxy: FlakyS3, **options: int) -> S3Store:
    return S3Store(
        endpoint=proxy.url,
        bucket=os.environ["RELAYTUNE_S3_BUCKET"],
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        max_attempts=ATTEMPTS,
        **options,
    )


def _run(job_id: str, name: str, attempt: int = 1) -> None:
    run_phase(
        {"job_id": job_id, "phase": name, "attempt": attempt, "pool": "x"},
        worker_id=f"test/{name}/{attempt}",
    )


def events_of(job_id: str, type_: str, *, attempt: int) -> list[dict[str, Any]]:
    with session_scope() as session:
        rows = session.scalars(
            select(Event).where(
                Event.job_id == job_id, Event.type == type_, Event.attempt == attempt
            )
        ).all()
        return [dict(row.data) for row in rows]


def _outcomes(proxy: FlakyS3, key: str) -> list[str]:
    return [s.outcome for s in proxy.seen(lambda r: r.method == "PUT" and r.key == key)]


def test_every_kind_of_request_rides_out_5xx_answers_and_dropped_connections(
    through_proxy: FlakyS3,
    tmp_path: Path,
) -> None:
    store = _store(through_proxy)
    source = tmp_path / "source"
    source.write_bytes(b"x" * 4096)
    for method in ("PUT", "GET", "HEAD", "DELETE"):

        def match(r: Request, method: str = method) -> bool:
            return r.method == method and r.key.startswith("t/")

        through_proxy.fail(match, status=503, times=1)  # then the retry
        through_proxy.drop(match, times=1)  # loses its connection, and the next one passes
    through_proxy.fail(lambda r: r.method == "GET" and r.key == "", status=500, times=1)

    store.put_bytes("t/bytes", b"hello")
    store.put_file("t/file", source)
    assert store.get_bytes("t/bytes") == b"hello"
    store.get_file("t/file", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == source.read_bytes()
    assert store.exists("t/file") and not store.exists("t/missing")
    assert store.list("t/") == ["t/bytes", "t/file"]
    store.delete("t/bytes")
    assert store.list("t/") == ["t/file"]
    # Each failure was followed by a successful retry of the same request.
    assert _outcomes(through_proxy, "t/bytes")[:3] == ["503", "dropped", "200"]


def test_a_multipart_upload_retries_its_parts_and_one_that_keeps_failing_leaves_nothing(
    through_proxy: FlakyS3,
    tmp_path: Path,
) -> None:
    part = 5 * 1024 * 1024  # S3's smallest part
    store = _store(through_proxy, multipart_threshold=part, multipart_chunksize=part)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(6 * 1024 * 1024))  # two parts
    through_proxy.fail(lambda r: r.is_part, status=503, times=1)
    through_proxy.drop(lambda r: r.is_part, times=1)

    store.put_file("m/retried", big)
    store.get_file("m/retried", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == big.read_bytes()
    parts = through_proxy.seen(lambda r: r.is_part and r.key == "m/retried")
    assert sorted(s.outcome for s in parts) == ["200", "200", "503", "dropped"]

    through_proxy.fail(lambda r: r.is_part and r.query["partNumber"] == ["2"], status=503)
    with pytest.raises(ObjectStoreUnavailable) as failed:
        store.put_file("m/lost", big)
    assert failed.value.code == "object_store_unavailable"
    # The message reaches tenants: the store's address and bucket go to the operator's log.
    assert through_proxy.url not in failed.value.message
    assert store.bucket not in failed.value.message
    assert "'m/lost'" in failed.value.message and "HTTP 503" in failed.value.message
    assert not store.exists("m/lost")
    # The failed upload was aborted: no parts are left behind in the bucket.
    assert not store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")


@pytest.mark.e2e
def test_a_warmup_rides_out_a_flaky_store_and_every_checkpoint_it_records_is_whole(
    through_proxy: FlakyS3,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    job_id = submit(example_dir, tiny_model_dir)
    warmup = f"jobs/{job_id}/warmup/"
    _run(job_id, "preprocess")
    # At most two failures per request, so that each goes through at its last attempt.
    for name, fault in (
        ("adapter_model.safetensors", "503"),
        ("training_state.pt", "dropped"),
        ("manifest.json", "500"),
    ):

        def match(r: Request, name: str = name) -> bool:
            return puts_under(warmup)(r) and r.key.endswith(name)

        if fault == "dropped":
            through_proxy.drop(match, times=2)
        else:
            through_proxy.fail(match, status=int(fault), times=2)
    # Pruning old checkpoints cannot delete anything: the sweep will, the run goes on.
    through_proxy.fail(lambda r: r.method == "DELETE" and r.key.startswith(warmup), status=503)

    _run(job_id, "warmup")

    assert phase(job_id, "warmup").status == "succeeded"
    assert metric_steps(job_id, "warmup", 1) == [1, 2, 3, 4]
    first = f"{warmup}a1/step-1"
    assert _outcomes(through_proxy, f"{first}/adapter/adapter_model.safetensors") == [
        "503",
        "503",
        "200",
    ]
    assert _outcomes(through_proxy, f"{first}/training_state.pt") == ["dropped", "dropped", "200"]
    assert _outcomes(through_proxy, f"{first}/manifest.json") == ["500", "500", "200"]
    assert_checkpoints_whole(job_id)


@pytest.mark.e2e
def test_a_store_that_keeps_failing_is_retried_then_fails_the_phase_naming_the_store(
    through_proxy: FlakyS3,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    job_id = submit(example_dir, tiny_model_dir)
    _run(job_id, "preprocess")
    attempt_1 = f"jobs/{job_id}/warmup/a1"

    def after_the_first_checkpoint(r: Request) -> bool:
        # The adapter of step 2's checkpoints goes up; their training state never does.
        return (
            r.method == "PUT"
            and r.key.startswith(f"jobs/{job_id}/warmup/")
            and r.key.endswith("/training_state.pt")
            and "/step-1/" not in r.key
        )

    through_proxy.fail(after_the_first_checkpoint, status=503)
    # Each attempt gives up on the store and queues the next, which resumes from step 1's
    # checkpoint, until the attempts (3 by default) are spent.
    for attempt in (1, 2):
        _run(job_id, "warmup", attempt=attempt)
        retried = phase(job_id, "warmup")
        assert (retried.status, retried.attempt) == ("queued", attempt + 1)
        assert retried.resume_key == f"{attempt_1}/step-1"
        [event] = events_of(job_id, "phase_retrying", attempt=attempt)
        assert event["code"] == "object_store_unavailable"
    _run(job_id, "warmup", attempt=3)

    failed = phase(job_id, "warmup")
    assert failed.status == "failed" and failed.error_code == "object_store_unavailable"
    message = failed.error_message or ""
    assert through_proxy.url not in message and "relaytune-test" not in message, message
    assert "failed to write" in message and "HTTP 503" in message, message
    assert f"{ATTEMPTS} attempts" in message, message
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed"
    # What went up of the failed checkpoint has no manifest and no row: it never existed.
    half = {
        key.rsplit("/", 1)[0]
        for key in get_store().list(attempt_1 + "/")
        if key.endswith("adapter_model.safetensors") and "/step-1/" not in key
    }
    assert half, "the checkpoint after step 1 was not partly uploaded"
    recorded = {row.key for row in checkpoint_rows(job_id)}
    for adapter_dir in half:
        checkpoint = adapter_dir.rsplit("/", 1)[0]
        assert not get_store().exists(f"{checkpoint}/manifest.json")
        assert checkpoint not in recorded
    assert failed.resume_key == f"{attempt_1}/step-1"
    assert_checkpoints_whole(job_id)

    # Once the store is back, a requeue continues from the last whole checkpoint.
    through_proxy.reset()
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.requeue_phase(session, job.tenant_id, job_id, "warmup")
    _run(job_id, "warmup", attempt=4)
    assert phase(job_id, "warmup").status == "succeeded"
    assert metric_steps(job_id, "warmup", 4) == [2, 3, 4]
    assert_checkpoints_whole(job_id)


def test_readiness_and_uploads_answer_503_naming_the_store_while_s3_fails(
    through_proxy: FlakyS3,
    example_dir: Path,
) -> None:
    from fastapi.testclient import TestClient

    from services.api.main import create_app
    from tests.factories import new_api_key, zip_folder

    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key()}"
        assert client.get("/readyz").status_code == 200
        through_proxy.fail(lambda r: True, status=503)
        not_ready = client.get("/readyz")  # a probe that fails is not a missing object
        upload = client.post("/v1/datasets", files={"file": ("ex.zip", zip_folder(example_dir))})
    assert not_ready.status_code == 503, not_ready.text
    assert not_ready.json()["error"]["code"] == "not_ready"
    assert "the object store" in not_ready.json()["error"]["message"]
    assert upload.status_code == 503, upload.text
    error = upload.json()["error"]
    assert error["code"] == "object_store_unavailable"
    # Tenants learn which request failed, never where the store is or what it is called.
    assert "failed to" in error["message"]
    assert through_proxy.url not in upload.text
    assert "127.0.0.1" not in upload.text
    assert "bucket" not in upload.text.lower()
