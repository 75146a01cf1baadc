"""Every event about a phase names the phase and the attempt it concerns."""

from __future__ import annotations

import pytest

from orchestrator import dispatch, jobs
from orchestrator.db import session_scope
from orchestrator.models import Event, Job
from tests.orchestrator.relay_helpers import (
    cancel,
    claim,
    complete,
    expire_lease,
    new_tenant,
    run_reaper,
    submit,
)


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant())


def _phase_events(job_id: str) -> list[tuple[str, str | None, int | None]]:
    with session_scope() as session:
        rows = session.query(Event).filter_by(job_id=job_id).order_by(Event.id)
        return [(e.type, e.phase, e.attempt) for e in rows if e.phase is not None]


def _requeue(job_id: str, phase: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.requeue_phase(session, job.tenant_id, job_id, phase)


def test_a_reaped_run_and_a_requeue_are_told_with_their_phase_and_attempt(job_id: str) -> None:
    claim(job_id, "preprocess")
    expire_lease(job_id, "preprocess")
    run_reaper()
    complete(claim(job_id, "preprocess", attempt=2))
    cancel(job_id)
    _requeue(job_id, "preprocess")
    assert _phase_events(job_id) == [
        ("phase_queued", "preprocess", 1),
        ("phase_started", "preprocess", 1),
        ("lease_expired", "preprocess", 1),
        ("phase_queued", "preprocess", 2),
        ("phase_started", "preprocess", 2),
        ("phase_succeeded", "preprocess", 2),
        ("phase_queued", "warmup", 1),
        ("phase_cancelled", "warmup", 1),
        ("phase_requeued", "preprocess", 2),
        ("phase_queued", "preprocess", 3),
    ]


def test_a_dead_run_of_a_cancelled_job_is_closed_under_its_attempt(job_id: str) -> None:
    claim(job_id, "preprocess")
    cancel(job_id)
    expire_lease(job_id, "preprocess")
    run_reaper()
    assert _phase_events(job_id)[-2:] == [
        ("lease_expired", "preprocess", 1),
        ("phase_cancelled", "preprocess", 1),
    ]
