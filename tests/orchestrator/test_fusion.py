"""Same-pool fusion: the worker that finished a phase takes the next one when it shares the pool."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from orchestrator import dispatch, fusion, runs
from orchestrator.db import session_scope
from orchestrator.models import Event, Job, Phase, utcnow
from orchestrator.reaper import reap
from tests.orchestrator.relay_helpers import new_tenant, submit

LEASE = 60


def _claim(job_id: str, phase: str) -> runs.Claim:
    with session_scope() as session:
        return runs.claim_phase(
            session, job_id=job_id, phase=phase, attempt=1, worker_id="w1", lease_seconds=LEASE
        )


def _complete_and_continue(claim: runs.Claim) -> runs.Claim | None:
    with session_scope() as session:
        runs.complete_phase(session, claim, output_key=claim.run_prefix, summary={})
        return fusion.continue_on_same_pool(session, claim, worker_id="w1", lease_seconds=LEASE)


def _events(job_id: str, type_: str) -> list[Event]:
    with session_scope() as session:
        rows = session.query(Event).filter_by(job_id=job_id, type=type_).all()
        session.expunge_all()
        return rows


@pytest.fixture
def fused_job(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant(), pools={"warmup": "a100", "final": "a100"})


def test_next_phase_on_the_same_pool_is_claimed_in_process(
    fused_job: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    pre = _claim(fused_job, "preprocess")
    assert _complete_and_continue(pre) is None  # t4 then a100: the relay goes through a queue
    warm = _claim(fused_job, "warmup")
    final = _complete_and_continue(warm)
    assert final is not None
    assert (final.phase, final.attempt, final.pool) == ("final", 1, "a100")
    assert final.input_key == warm.run_prefix
    assert (final.start_epoch, final.end_epoch) == (2, 3)
    # No message for the fused phase: nobody else can pick it up.
    assert [m.phase for m in recorded_dispatch.sent] == ["preprocess", "warmup"]
    with session_scope() as session:
        job = session.get(Job, fused_job)
        assert job is not None
        assert [(p.name, p.status, p.worker_id) for p in job.phases][2] == (
            "final",
            "running",
            "w1",
        )
    assert [e.data["after"] for e in _events(fused_job, "phase_fused")] == ["warmup"]
    # Still a phase of its own: it finishes, bills and succeeds by itself.
    assert _complete_and_continue(final) is None
    with session_scope() as session:
        job = session.get(Job, fused_job)
        assert job is not None and job.status == "succeeded"


def test_fused_phase_of_a_dead_worker_is_reaped_and_sent(
    fused_job: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    _complete_and_continue(_claim(fused_job, "preprocess"))
    final = _complete_and_continue(_claim(fused_job, "warmup"))
    assert final is not None
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == fused_job, Phase.name == "final")
            .values(lease_expires_at=utcnow())
        )
    with session_scope() as session:
        reap(session, max_attempts=3, resend_after_seconds=3600)
    assert [(m.phase, m.attempt) for m in recorded_dispatch.sent][-1] == ("final", 2)
