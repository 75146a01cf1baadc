"""The worker's side of the relay: fenced claims, hand-off, cancel, reaper, cost."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import update

from orchestrator import dispatch, jobs, runs
from orchestrator.db import session_scope
from orchestrator.errors import IllegalTransition, InvalidRequest, LeaseLost, PhaseNotClaimable
from orchestrator.layout import CheckpointKind, checkpoint_key
from orchestrator.models import Event, Job, Phase, utcnow
from orchestrator.reaper import reap
from orchestrator.storage import get_store
from tests.factories import dataset_zip
from tests.orchestrator import relay_helpers as relay
from tests.orchestrator.relay_helpers import LEASE


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return relay.submit(relay.new_tenant())


def test_relay_hands_off_phase_by_phase(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    pre = relay.claim(job_id, "preprocess")
    assert pre.input_key == f"jobs/{job_id}/dataset/dataset.zip"
    assert pre.run_prefix == f"jobs/{job_id}/preprocess/a1"
    assert relay.job(job_id).status == "running"
    relay.complete(pre)
    assert [(m.phase, m.queue) for m in recorded_dispatch.sent][-1] == ("warmup", "gpu.a10")
    warm = relay.claim(job_id, "warmup")
    assert warm.input_key == pre.run_prefix
    assert (warm.start_epoch, warm.end_epoch) == (0, 2)
    relay.complete(warm)
    final = relay.claim(job_id, "final")
    assert (final.start_epoch, final.end_epoch) == (2, 3)
    assert final.input_key == warm.run_prefix
    relay.complete(final)
    job = relay.job(job_id)
    assert job.status == "succeeded"
    assert job.finished_at is not None
    assert [m.phase for m in recorded_dispatch.sent] == ["preprocess", "warmup", "final"]


def test_a_claim_names_the_jobs_copy_of_its_validation_data_set(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    held_out = dataset_zip({"v.png": {"question": "Which part?", "answer": "resistor"}})
    job_id = relay.submit(relay.new_tenant(), validation_data=held_out)
    pre = relay.claim(job_id, "preprocess")
    assert pre.input_key == f"jobs/{job_id}/dataset/dataset.zip"
    assert pre.validation_input_key == f"jobs/{job_id}/dataset/validation.zip"
    assert pre.validation_dataset_id == relay.job(job_id).validation_dataset_id
    assert get_store().get_bytes(pre.validation_input_key) == held_out


def test_a_claim_without_a_validation_data_set_names_none(job_id: str) -> None:
    pre = relay.claim(job_id, "preprocess")
    assert (pre.validation_input_key, pre.validation_dataset_id) == ("", "")


def test_duplicate_and_stale_deliveries_cannot_claim(job_id: str) -> None:
    relay.claim(job_id, "preprocess", worker="w1")
    with pytest.raises(PhaseNotClaimable):
        relay.claim(job_id, "preprocess", worker="w2")  # same message delivered twice
    with pytest.raises(PhaseNotClaimable):
        relay.claim(job_id, "preprocess", attempt=0)


def test_a_run_that_lost_its_lease_cannot_write(job_id: str) -> None:
    stale = relay.claim(job_id, "preprocess")
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id)
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as session:
        assert reap(session, max_attempts=3, resend_after_seconds=LEASE) == 1
    fresh = relay.claim(job_id, "preprocess", attempt=2, worker="w2")
    for write in (
        lambda s: runs.report_progress(
            s, stale, step=1, total_steps=2, epoch=0, metrics={}, lease_seconds=LEASE
        ),
        lambda s: runs.complete_phase(s, stale, output_key="x", summary={}),
        lambda s: runs.fail_phase(s, stale, code="boom", message="boom"),
    ):
        with pytest.raises(LeaseLost), session_scope() as session:
            write(session)
    relay.complete(fresh)
    assert relay.job(job_id).phases[0].output_key == fresh.run_prefix


def test_reaper_gives_up_after_max_attempts(job_id: str) -> None:
    for attempt in (1, 2):
        relay.claim(job_id, "preprocess", attempt=attempt)
        with session_scope() as session:
            session.execute(
                update(Phase)
                .where(Phase.job_id == job_id, Phase.name == "preprocess")
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )
        with session_scope() as session:
            reap(session, max_attempts=2, resend_after_seconds=LEASE)
    job = relay.job(job_id)
    assert job.status == "failed"
    assert job.phases[0].status == "failed"
    assert job.phases[0].error_code == "lease_expired"
    assert job.error_param == "preprocess"


def test_reaper_resends_a_queued_phase_whose_message_was_lost(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "preprocess")
            .values(sent_at=utcnow() - timedelta(seconds=LEASE + 1))
        )
    with session_scope() as session:
        reap(session, max_attempts=3, resend_after_seconds=LEASE)
    assert [(m.phase, m.attempt) for m in recorded_dispatch.sent] == [("preprocess", 1)] * 2


def test_dispatch_waits_for_commit(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    pre = relay.claim(job_id, "preprocess")
    sent_before = len(recorded_dispatch.sent)
    with pytest.raises(RuntimeError), session_scope() as session:
        runs.complete_phase(session, pre, output_key=pre.run_prefix, summary={})
        raise RuntimeError("the request failed after the phase completed")
    assert len(recorded_dispatch.sent) == sent_before
    assert relay.job(job_id).phases[1].status == "pending"


def test_cancel_while_running_is_cooperative(job_id: str) -> None:
    pre = relay.claim(job_id, "preprocess")
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        job = jobs.cancel_job(session, tenant_id, job_id)
        assert job.status == "cancelling"
        assert [p.status for p in job.phases] == ["running", "cancelled", "cancelled"]
    with session_scope() as session:
        assert (
            runs.report_progress(
                session,
                pre,
                step=1,
                total_steps=4,
                epoch=0,
                metrics={"loss": 1.0},
                lease_seconds=LEASE,
            )
            is True
        )
    with session_scope() as session:
        runs.acknowledge_cancel(session, pre)
    assert relay.job(job_id).status == "cancelled"


def test_cost_accrues_from_run_time_and_pool_price(job_id: str) -> None:
    pre = relay.claim(job_id, "preprocess")
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "preprocess")
            .values(started_at=utcnow() - timedelta(hours=2))
        )
    relay.complete(pre)
    phase = relay.job(job_id).phases[0]
    # two hours on the t4 pool at 1 CNY/h
    assert abs(Decimal(phase.cost_amount) - Decimal(2)) < Decimal("0.01")


def test_illegal_moves_raise(job_id: str) -> None:
    from orchestrator.phase_moves import move

    with session_scope() as session:
        phase = session.get(Job, job_id).phases[2]  # type: ignore[union-attr]
        with pytest.raises(IllegalTransition):
            move(phase, "running")
        with pytest.raises(IllegalTransition):
            move(phase, "succeeded")


def _checkpoint(claim: runs.Claim, kind: str, step: int, *, best: int | None = None) -> str:
    """Record a checkpoint; `best` is the step of the job's best that its manifest carries."""
    key = checkpoint_key(claim.run_prefix, CheckpointKind(kind), step)
    manifest = {} if best is None else {"best": {"metric": "val_loss", "value": 0.5, "step": best}}
    with session_scope() as session:
        runs.record_checkpoint(
            session, claim, kind=kind, key=key, step=step, size=1, manifest=manifest
        )
    return key


def test_a_rerun_after_a_lost_lease_resumes_from_the_latest_checkpoint(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    first = relay.claim(job_id, "warmup")
    assert first.resume_key == ""
    _checkpoint(first, "epoch", 3)
    latest = _checkpoint(first, "time", 5)
    _checkpoint(first, "best", 4)  # an output, not a place to resume from
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "warmup")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as session:
        reap(session, max_attempts=3, resend_after_seconds=LEASE)
    second = relay.claim(job_id, "warmup", attempt=2)
    assert second.resume_key == latest
    assert second.run_prefix.endswith("/warmup/a2")


def test_requeue_continues_from_the_latest_checkpoint_or_from_the_input(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    warm = relay.claim(job_id, "warmup")
    latest = _checkpoint(warm, "stop", 2)
    with session_scope() as session:
        runs.fail_phase(session, warm, code="budget_exceeded", message="over budget")
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        jobs.requeue_phase(session, tenant_id, job_id, "warmup")
    again = relay.claim(job_id, "warmup", attempt=2)
    assert again.resume_key == latest
    with session_scope() as session:
        runs.fail_phase(session, again, code="phase_error", message="boom")
    with session_scope() as session:
        with pytest.raises(InvalidRequest) as bad:
            jobs.requeue_phase(session, tenant_id, job_id, "warmup", start_from="scratch")
        assert bad.value.param == "from"
        jobs.requeue_phase(session, tenant_id, job_id, "warmup", start_from="input")
    assert relay.claim(job_id, "warmup", attempt=3).resume_key == ""


def test_requeue_of_a_succeeded_phase_starts_it_over_and_forgets_later_checkpoints(
    job_id: str,
) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    warm = relay.claim(job_id, "warmup")
    _checkpoint(warm, "final", 4)
    relay.complete(warm)
    final = relay.claim(job_id, "final")
    _checkpoint(final, "step", 5)
    with session_scope() as session:
        runs.fail_phase(session, final, code="phase_error", message="boom")
    with session_scope() as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        jobs.requeue_phase(session, tenant_id, job_id, "warmup")
    assert relay.claim(job_id, "warmup", attempt=2).resume_key == ""
    with session_scope() as session:
        phase = session.get(Job, job_id).phases[2]  # type: ignore[union-attr]
        assert (phase.status, phase.resume_key) == ("pending", None)


def test_pruning_keeps_the_newest_resumable_checkpoints_and_the_best(job_id: str) -> None:
    pre = relay.claim(job_id, "preprocess")
    relay.complete(pre)
    warm = relay.claim(job_id, "warmup")
    keys = [_checkpoint(warm, "step", step) for step in (1, 2, 3)]
    older_best = _checkpoint(warm, "best", 2)
    best = _checkpoint(warm, "best", 3)
    with session_scope() as session:
        pruned = runs.prune_checkpoints(session, warm, keep=2)
    assert pruned == [keys[0], older_best]
    with session_scope() as session:
        from orchestrator import repository

        left = {c.key for c in repository.checkpoints(session, job_id)}
    assert left == {keys[1], keys[2], best}


def test_a_run_is_handed_the_best_checkpoint_it_starts_from(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    warm = relay.claim(job_id, "warmup")
    assert warm.best_key == ""  # a first run starts from the artifact, which names no best
    warm_best = _checkpoint(warm, "best", 2, best=2)
    with session_scope() as session:
        runs.complete_phase(
            session, warm, output_key=_checkpoint(warm, "final", 4, best=2), summary={}
        )
    final = relay.claim(job_id, "final")
    assert final.best_key == warm_best
    # Its epochs beat the warmup's best, then its worker dies: the re-run continues from a
    # checkpoint that names the new best.
    own_best = _checkpoint(final, "best", 5, best=5)
    _checkpoint(final, "step", 6, best=5)
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "final")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as session:
        reap(session, max_attempts=3, resend_after_seconds=LEASE)
    again = relay.claim(job_id, "final", attempt=2)
    assert again.best_key == own_best
    with session_scope() as session:
        runs.fail_phase(session, again, code="phase_error", message="boom")
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
    with session_scope() as session:
        jobs.requeue_phase(session, tenant_id, job_id, "final", start_from="input")
    # The warmup's output again.
    assert relay.claim(job_id, "final", attempt=3).best_key == warm_best


def test_a_store_failure_queues_the_next_attempt_until_attempts_run_out(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    for attempt in (1, 2):
        with session_scope() as session:
            queued = runs.retry_or_fail_phase(
                session,
                relay.claim(job_id, "warmup", attempt=attempt),
                code="object_store_unavailable",
                message="the S3 bucket did not answer",
                max_attempts=3,
            )
        assert queued
        warmup = next(p for p in relay.job(job_id).phases if p.name == "warmup")
        assert (warmup.status, warmup.attempt) == ("queued", attempt + 1)
    with session_scope() as session:
        queued = runs.retry_or_fail_phase(
            session,
            relay.claim(job_id, "warmup", attempt=3),
            code="object_store_unavailable",
            message="the S3 bucket did not answer",
            max_attempts=3,
        )
    assert not queued
    job = relay.job(job_id)
    warmup = next(p for p in job.phases if p.name == "warmup")
    assert (warmup.status, warmup.attempt, warmup.error_code) == (
        "failed",
        3,
        "object_store_unavailable",
    )
    assert job.status == "failed"


def test_a_store_failure_of_a_job_being_cancelled_is_not_retried(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    claim = relay.claim(job_id, "warmup")
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.cancel_job(session, job.tenant_id, job_id)
    with session_scope() as session:
        queued = runs.retry_or_fail_phase(
            session,
            claim,
            code="unavailable",
            message="the database did not answer",
            max_attempts=3,
        )
    assert not queued
    assert next(p for p in relay.job(job_id).phases if p.name == "warmup").attempt == 1


MAX_ATTEMPTS = 3


def _hand_back_times(job_id: str, times: int) -> int:
    """A warmup handed back `times` times by stopping workers; returns the attempt queued."""
    relay.complete(relay.claim(job_id, "preprocess"))
    for attempt in range(1, times + 1):
        with session_scope() as session:
            runs.hand_back_phase(session, relay.claim(job_id, "warmup", attempt=attempt))
    return times + 1


def _warmup(job_id: str) -> Phase:
    return next(p for p in relay.job(job_id).phases if p.name == "warmup")


def test_hand_backs_use_no_attempt_of_a_failing_phase(job_id: str) -> None:
    attempt = _hand_back_times(job_id, MAX_ATTEMPTS - 1)
    assert _warmup(job_id).attempt == MAX_ATTEMPTS  # the fencing token still went up
    # Every attempt the phase is allowed is still its own: it fails for good on the last.
    for used in range(1, MAX_ATTEMPTS + 1):
        with session_scope() as session:
            queued = runs.retry_or_fail_phase(
                session,
                relay.claim(job_id, "warmup", attempt=attempt),
                code="object_store_unavailable",
                message="the S3 bucket did not answer",
                max_attempts=MAX_ATTEMPTS,
            )
        assert queued == (used < MAX_ATTEMPTS), used
        attempt += 1
    warmup = _warmup(job_id)
    assert (warmup.status, warmup.error_code) == ("failed", "object_store_unavailable")
    assert (warmup.attempt, warmup.handbacks) == (2 * MAX_ATTEMPTS - 1, MAX_ATTEMPTS - 1)
    with session_scope() as session:
        retrying = session.query(Event).filter_by(job_id=job_id, type="phase_retrying")
        assert [e.data["attempts"] for e in retrying.order_by(Event.id)] == ["1 of 3", "2 of 3"]


def test_the_reaper_requeues_a_phase_whose_earlier_runs_were_handed_back(job_id: str) -> None:
    attempt = _hand_back_times(job_id, MAX_ATTEMPTS - 1)
    relay.claim(job_id, "warmup", attempt=attempt)
    relay.expire_lease(job_id, "warmup")
    assert relay.run_reaper(max_attempts=MAX_ATTEMPTS) == 1
    warmup = _warmup(job_id)
    assert (warmup.status, warmup.attempt) == ("queued", attempt + 1)
