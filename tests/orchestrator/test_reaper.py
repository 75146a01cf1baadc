"""The reaper: what it does with dead runs and waiting phases, and that it says so."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import event, update
from sqlalchemy.orm import Session

from orchestrator import dispatch, repository
from orchestrator.cost import phase_cost
from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round
from orchestrator.models import Phase, utcnow
from orchestrator.reaper import reap_in_rounds
from tests.orchestrator.relay_helpers import (
    LEASE,
    claim,
    complete,
    expire_lease,
    job,
    new_tenant,
    run_reaper,
    submit,
)


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant())


def test_every_reaper_action_is_logged_with_job_phase_and_attempt(
    job_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    complete(claim(job_id, "preprocess"))
    claim(job_id, "warmup")
    expire_lease(job_id, "warmup")
    with caplog.at_level(logging.INFO, logger="orchestrator.reaper"):
        run_reaper()
    [line] = [r.getMessage() for r in caplog.records if r.name == "orchestrator.reaper"]
    assert f"job {job_id} phase warmup attempt 1" in line
    assert "re-queued" in line


def test_a_dead_workers_run_is_billed_up_to_its_last_heartbeat(job_id: str) -> None:
    claim(job_id, "preprocess")
    started = utcnow() - timedelta(hours=1)
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "preprocess")
            .values(started_at=started)
        )
    expire_lease(job_id, "preprocess", heartbeat_ago=50 * 60)  # it died 10 minutes in
    with session_scope() as session:
        phase = repository.phase_of(session, job_id, "preprocess")
        assert phase is not None
        pool = repository.pools_by_name(session)[phase.pool]
        shown = phase_cost(phase, pool, utcnow())
    run_reaper()
    reaped = job(job_id)
    [timing] = reaped.timings
    assert timing.billed_s == pytest.approx(600, abs=5)
    assert reaped.phases[0].billed_seconds == pytest.approx(600, abs=5)
    assert Decimal(reaped.phases[0].cost_amount) == shown  # the meter stood still while dead


def test_a_message_the_broker_still_holds_is_not_sent_again(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    [message] = recorded_dispatch.sent
    _age_sends(job_id, seconds=10 * LEASE)
    recorded_dispatch.waiting = {message.task_id}  # waiting behind other work
    for _ in range(3):
        run_reaper()
    assert len(recorded_dispatch.sent) == 1
    recorded_dispatch.waiting = set()  # the broker lost it (flushed, say)
    run_reaper()
    run_reaper()
    assert recorded_dispatch.sent == [message, message]


def test_without_a_broker_to_ask_re_sends_back_off(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    queued_at = job(job_id).phases[0].queued_at
    for _ in range(16):  # 16 lease periods with no worker
        _age_sends(job_id, seconds=LEASE)
        run_reaper()
    # re-sent after 1, 3, 7 and 15 periods (waits of 1, 2, 4, 8): not 16 duplicates
    assert len(recorded_dispatch.sent) == 1 + 4
    # a re-send leaves queued_at alone: the phase's queue wait still counts from there
    assert queued_at is not None
    assert job(job_id).phases[0].queued_at == queued_at - timedelta(seconds=16 * LEASE)


def _age_sends(job_id: str, *, seconds: float) -> None:
    """Move the phase's queueing and last send `seconds` into the past."""
    with session_scope() as session:
        phase = repository.phase_of(session, job_id, "preprocess")
        assert phase is not None and phase.sent_at is not None and phase.queued_at is not None
        phase.sent_at -= timedelta(seconds=seconds)
        phase.queued_at -= timedelta(seconds=seconds)


def test_the_broker_is_asked_which_messages_it_still_holds(private_broker_url: str) -> None:
    import redis

    sender = dispatch.CeleryDispatcher(private_broker_url)
    held = dispatch.PhaseMessage("job-1", "warmup", 2, "a10", "gpu.a10")
    sender.send(held)
    assert sender.waiting_task_ids(["gpu.a10", "gpu.t4"]) == {held.task_id}
    redis.Redis.from_url(private_broker_url).delete("gpu.a10")  # a flush loses it
    assert sender.waiting_task_ids(["gpu.a10"]) == set()


def test_a_mass_expiry_is_re_queued_in_transactions_of_a_batch_each_sent_as_it_commits(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    tenant = new_tenant()
    job_ids = [submit(tenant) for _ in range(5)]
    recorded_dispatch.sent.clear()
    for job_id in job_ids:
        claim(job_id, "preprocess")
        expire_lease(job_id, "preprocess")
    sent_at_each_commit: list[int] = []

    def on_commit(session: Session) -> None:
        sent_at_each_commit.append(len(recorded_dispatch.sent))

    event.listen(Session, "after_commit", on_commit)
    try:
        handled = reap_in_rounds(max_attempts=3, resend_after_seconds=LEASE, batch=2)
    finally:
        event.remove(Session, "after_commit", on_commit)
    assert handled == 5
    assert sorted(m.job_id for m in recorded_dispatch.sent) == sorted(job_ids)
    assert {m.attempt for m in recorded_dispatch.sent} == {2}
    # Three transactions, each sending its own batch as it commits (this listener runs after
    # the one that sends), not one transaction sending all five at the end.
    assert sent_at_each_commit == [2, 4, 5]
    for job_id in job_ids:
        assert next(p.attempt for p in job(job_id).phases if p.name == "preprocess") == 2


def test_a_reaper_round_skipped_for_another_replica_says_so(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    with session_scope() as other_replica:
        assert take_round(other_replica, Round.REAPER)
        assert reap_in_rounds(max_attempts=3, resend_after_seconds=LEASE, batch=2) is None
