"""Phase tasks on a real Celery worker (celery.contrib.testing) with a real Redis broker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from sqlalchemy import select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Event, Job
from orchestrator.storage import get_store
from tests.factories import zip_folder
from tests.orchestrator import relay_helpers as relay
from worker import tasks


@pytest.fixture
def celery_worker_on_t4(private_broker_url: str) -> Iterator[dispatch.CeleryDispatcher]:
    from worker.celery_app import app

    url = private_broker_url
    app.conf.broker_url = url
    sender = dispatch.CeleryDispatcher(url)
    dispatch.set_dispatcher(sender)
    # The solo pool runs tasks in the worker thread; the production flags (prefork, one child
    # per task) are exercised by the end-to-end test's worker processes.
    with start_worker(
        app,
        pool="solo",
        concurrency=1,
        queues=["gpu.t4"],
        perform_ping_check=False,
        loglevel="WARNING",
        shutdown_timeout=30,
    ):
        yield sender
    dispatch.set_dispatcher(None)


def _submit(tiny_model_dir: str, example_dir: Any) -> str:
    return relay.submit(
        relay.new_tenant(),
        base_model=tiny_model_dir,
        hyperparameters={},
        data=zip_folder(example_dir),
        filename="example.zip",
    )


def _wait_for(predicate: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out")


def _events(job_id: str) -> list[Event]:
    with session_scope() as session:
        return list(
            session.scalars(select(Event).where(Event.job_id == job_id).order_by(Event.id)).all()
        )


def test_preprocess_runs_on_the_t4_queue_once_despite_a_duplicate_delivery(
    clean_db: None,
    celery_worker_on_t4: dispatch.CeleryDispatcher,
    tiny_model_dir: str,
    example_dir: Any,
) -> None:
    job_id = _submit(tiny_model_dir, example_dir)
    # Deliver the same message again, as a broker re-delivery would.
    celery_worker_on_t4.send(dispatch.PhaseMessage(job_id, "preprocess", 1, "t4"))

    def warmup_queued() -> bool:
        with session_scope() as session:
            job = session.get(Job, job_id)
            return job is not None and job.phases[1].status == "queued"

    _wait_for(warmup_queued)
    import redis

    broker = redis.Redis.from_url(str(celery_worker_on_t4.app.conf.broker_url))
    _wait_for(lambda: broker.llen("gpu.t4") == 0)  # the duplicate was taken off the queue
    time.sleep(0.5)
    types = [e.type for e in _events(job_id) if e.phase == "preprocess"]
    assert types.count("phase_started") == 1
    assert types.count("phase_succeeded") == 1
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        pre = job.phases[0]
        assert pre.worker_id
        assert pre.output_key == f"jobs/{job_id}/preprocess/a1"
    assert get_store().exists(f"jobs/{job_id}/preprocess/a1/manifest.json")


def test_a_stale_delivery_is_dropped_before_the_task_runs(
    clean_db: None,
    celery_worker_on_t4: dispatch.CeleryDispatcher,
    tiny_model_dir: str,
    example_dir: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks, "run_phase", lambda payload, **_: ran.append(payload))
    dispatch.set_dispatcher(dispatch.RecordingDispatcher())  # attempt 1 is sent below
    job_id = _submit(tiny_model_dir, example_dir)
    dispatch.set_dispatcher(celery_worker_on_t4)
    for attempt in (0, 2):  # an old attempt, and one that was never queued
        celery_worker_on_t4.send(dispatch.PhaseMessage(job_id, "preprocess", attempt, "t4"))
    celery_worker_on_t4.send(dispatch.PhaseMessage(job_id, "preprocess", 1, "t4"))
    _wait_for(lambda: len(ran) == 1)
    import redis

    broker = redis.Redis.from_url(str(celery_worker_on_t4.app.conf.broker_url))
    _wait_for(lambda: broker.llen("gpu.t4") == 0 and broker.hlen("unacked") == 0)
    assert [p["attempt"] for p in ran] == [1]  # only the queued attempt reached the task
