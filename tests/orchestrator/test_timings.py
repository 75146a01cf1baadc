"""Every run that ends (completed, failed, cancelled or reaped) leaves one timing row whose
components add up to the seconds billed for it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from orchestrator import dispatch, jobs, runs
from orchestrator.db import session_scope
from orchestrator.models import Job, Phase, PhaseTiming, utcnow
from orchestrator.reaper import reap
from orchestrator.timings import RunTiming
from tests.orchestrator.relay_helpers import new_tenant, submit

LEASE = 60
MEASURED = RunTiming(
    startup_s=30.0,
    input_download_s=10.0,
    train_s=600.0,
    checkpoint_upload_s=20.0,
    samples=40,
    tokens=9000,
    checkpoints=3,
    input_bytes=1234,
    peak_memory_bytes=2**30,
    precision="bf16",
    device="NVIDIA A10",
    micro_batch=2,
    lora_targets="q_proj,v_proj",
)


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant(), base_model="/models/Qwen3-VL-8B-Instruct", hyperparameters={})


def _claim_an_hour_ago(job_id: str, phase: str, attempt: int = 1) -> runs.Claim:
    """Claimed after two minutes in the queue, and running for an hour since."""
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == phase)
            .values(queued_at=utcnow() - timedelta(hours=1, minutes=2))
        )
        claim = runs.claim_phase(
            session,
            job_id=job_id,
            phase=phase,
            attempt=attempt,
            worker_id="w1",
            lease_seconds=LEASE,
        )
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == phase)
            .values(started_at=utcnow() - timedelta(hours=1))
        )
        return claim


def _rows(job_id: str) -> list[PhaseTiming]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(PhaseTiming).where(PhaseTiming.job_id == job_id).order_by(PhaseTiming.id)
            )
        )


def _assert_adds_up(row: PhaseTiming) -> None:
    named = (
        row.startup_s
        + row.input_download_s
        + row.train_s
        + row.evaluate_s
        + row.export_s
        + row.checkpoint_upload_s
    )
    assert row.other_s >= 0
    assert named + row.other_s == pytest.approx(row.billed_s, abs=1e-6)


def test_a_completed_run_records_its_components_and_the_rest_as_other(job_id: str) -> None:
    claim = _claim_an_hour_ago(job_id, "preprocess")
    with session_scope() as session:
        runs.complete_phase(
            session, claim, output_key=claim.run_prefix, summary={}, timing=MEASURED
        )
    [row] = _rows(job_id)
    assert (row.phase, row.attempt, row.pool, row.outcome) == ("preprocess", 1, "t4", "succeeded")
    assert row.billed_s == pytest.approx(3600, abs=5)
    assert row.queue_wait_s == pytest.approx(120, abs=5)
    assert row.other_s == pytest.approx(3600 - 660, abs=5)
    _assert_adds_up(row)
    assert (row.samples, row.tokens, row.checkpoints, row.input_bytes) == (40, 9000, 3, 1234)
    assert (row.precision, row.device, row.micro_batch, row.lora_targets, row.model_key) == (
        "bf16",
        "NVIDIA A10",
        2,
        "q_proj,v_proj",
        "qwen3-vl-8b",
    )
    with session_scope() as session:
        phase = session.scalars(
            select(Phase).where(Phase.job_id == job_id, Phase.name == "preprocess")
        ).one()
        assert row.billed_s == pytest.approx(phase.billed_seconds)


def test_failed_and_cancelled_runs_write_their_row_too(job_id: str) -> None:
    pre = _claim_an_hour_ago(job_id, "preprocess")
    with session_scope() as session:
        runs.fail_phase(session, pre, code="phase_error", message="boom", timing=MEASURED)
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        jobs.requeue_phase(session, tenant_id, job_id, "preprocess")
    again = _claim_an_hour_ago(job_id, "preprocess", attempt=2)
    with session_scope() as session:
        jobs.cancel_job(session, tenant_id, job_id)
    with session_scope() as session:
        runs.acknowledge_cancel(session, again, timing=MEASURED)
    rows = _rows(job_id)
    assert [(r.attempt, r.outcome) for r in rows] == [(1, "failed"), (2, "cancelled")]
    for row in rows:
        _assert_adds_up(row)
        assert row.train_s == 600.0


def test_measured_components_beyond_the_billed_time_leave_other_at_zero(job_id: str) -> None:
    # A worker's clock may run a little ahead of the job store's; other_s never goes negative.
    with session_scope() as session:
        claim = runs.claim_phase(
            session,
            job_id=job_id,
            phase="preprocess",
            attempt=1,
            worker_id="w1",
            lease_seconds=LEASE,
        )
    with session_scope() as session:
        runs.complete_phase(
            session, claim, output_key=claim.run_prefix, summary={}, timing=MEASURED
        )
    [row] = _rows(job_id)
    assert row.other_s == 0.0
    assert row.train_s == 600.0


def test_a_run_without_measurements_bills_everything_as_other(job_id: str) -> None:
    claim = _claim_an_hour_ago(job_id, "preprocess")
    with session_scope() as session:
        runs.complete_phase(session, claim, output_key=claim.run_prefix, summary={})
    [row] = _rows(job_id)
    assert row.other_s == pytest.approx(row.billed_s)
    assert row.model_key == "qwen3-vl-8b"  # known from the job, measured or not


def test_a_reaped_run_keeps_its_billed_seconds(job_id: str) -> None:
    for attempt in (1, 2):
        _claim_an_hour_ago(job_id, "preprocess", attempt=attempt)
        with session_scope() as session:
            session.execute(
                update(Phase)
                .where(Phase.job_id == job_id, Phase.name == "preprocess")
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        with session_scope() as session:
            reap(session, max_attempts=2, resend_after_seconds=LEASE)
    rows = _rows(job_id)
    assert [(r.attempt, r.outcome) for r in rows] == [(1, "queued"), (2, "failed")]
    for row in rows:
        assert row.billed_s == pytest.approx(3600, abs=5)
        assert row.other_s == pytest.approx(row.billed_s)
    with session_scope() as session:
        phase = session.scalars(
            select(Phase).where(Phase.job_id == job_id, Phase.name == "preprocess")
        ).one()
        assert sum(r.billed_s for r in rows) == pytest.approx(phase.billed_seconds)
