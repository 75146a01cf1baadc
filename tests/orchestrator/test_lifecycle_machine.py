"""A lifecycle that cannot wedge: random interleavings of what users, workers, the broker and
the reaper do, against the real job store, with the invariants checked after every step.

Workers are played by calls to the orchestrator's worker-facing functions with any message
ever sent (so stale and duplicate deliveries happen as often as fresh ones); the broker's
at-least-once delivery, a worker dying (its lease expiring) and the reaper are rules too.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import text, update
from sqlalchemy.orm import Session

from orchestrator import db, dispatch, jobs, runs, storage
from orchestrator.datasets import create_dataset
from orchestrator.db import session_scope
from orchestrator.errors import IllegalTransition, LeaseLost, PhaseNotClaimable, RelaytuneError
from orchestrator.lifecycle import TERMINAL_JOB, derive_job_status
from orchestrator.models import Event, Job, Phase, PhaseTiming, Tenant, utcnow
from orchestrator.plan import PHASES
from orchestrator.reaper import reap
from orchestrator.settings import get_settings
from tests.conftest import DATA_TABLES
from tests.factories import dataset_zip

LEASE = 60
MAX_ATTEMPTS = 3
JOB_EVENTS = ("job_succeeded", "job_failed", "job_cancelled")
T = TypeVar("T")


def _recent_first(items: list[T], pick: int) -> T:
    """Mostly one of the newest few (live runs, fresh messages), sometimes any older one
    (stale runs, duplicate deliveries)."""
    if pick < 40:
        return items[-1 - pick % min(3, len(items))]
    return items[pick % len(items)]


def worker_call(work: Callable[[Session], T]) -> T | None:
    """What a worker may see from the job store: its delivery is stale, or its lease is lost.
    Anything else (an illegal move above all) escapes and fails the test."""
    try:
        with session_scope() as session:
            return work(session)
    except (PhaseNotClaimable, LeaseLost):
        return None


def user_call(work: Callable[[Session], Any]) -> None:
    """A user may be refused with a 4xx; never with an illegal move or a 5xx."""
    try:
        with session_scope() as session:
            work(session)
    except IllegalTransition:
        raise
    except RelaytuneError as exc:
        assert 400 <= exc.status_code < 500, exc


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        with db.get_engine().begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
        self.broker = dispatch.RecordingDispatcher()
        dispatch.set_dispatcher(self.broker)
        with session_scope() as session:
            tenant = Tenant(name="acme")
            session.add(tenant)
            session.flush()
            self.tenant_id = tenant.id
            self.dataset_id = create_dataset(
                session,
                storage.get_store(),
                get_settings(),
                tenant_id=tenant.id,
                filename="d.zip",
                data=dataset_zip(),
            ).id
        self.job_ids: list[str] = []
        self.claims: list[runs.Claim] = []
        self.claimed: set[tuple[str, str, int]] = set()
        self.status: dict[str, str] = {}  # each job's status after the previous step
        self.terminal_entries: Counter[str] = Counter()
        self.requeued: set[str] = set()  # jobs a user requeued in this step

    # -- users -------------------------------------------------------------------------------

    @precondition(lambda self: len(self.job_ids) < 2)
    @rule()
    def submit(self) -> None:
        with session_scope() as session:
            job = jobs.submit_job(
                session,
                storage.get_store(),
                tenant_id=self.tenant_id,
                dataset_id=self.dataset_id,
                base_model="tiny",
                hyperparameters={"warmup_epochs": 1, "total_epochs": 2},
                pools=None,
                metadata=None,
            )
            self.job_ids.append(job.id)

    @precondition(lambda self: self.job_ids)
    @rule(pick=st.integers(0, 2))
    def cancel(self, pick: int) -> None:
        job_id = self.job_ids[pick % len(self.job_ids)]
        user_call(lambda s: jobs.cancel_job(s, self.tenant_id, job_id))

    @precondition(lambda self: self.job_ids)
    @rule(
        pick=st.integers(0, 2),
        phase=st.sampled_from(PHASES),
        start_from=st.sampled_from([None, "checkpoint", "input"]),
    )
    def requeue(self, pick: int, phase: str, start_from: str | None) -> None:
        job_id = self.job_ids[pick % len(self.job_ids)]
        self.requeued.add(job_id)
        user_call(lambda s: jobs.requeue_phase(s, self.tenant_id, job_id, phase, start_from))

    # -- the broker and workers ----------------------------------------------------------------

    @precondition(lambda self: self.broker.sent)
    @rule(pick=st.integers(0, 50), worker=st.sampled_from(["w1", "w2"]))
    def deliver(self, pick: int, worker: str) -> None:
        """Any message ever sent, as often as the broker likes: fresh, duplicate or stale."""
        message = _recent_first(self.broker.sent, pick)
        claim = worker_call(
            lambda s: runs.claim_phase(
                s,
                job_id=message.job_id,
                phase=message.phase,
                attempt=message.attempt,
                worker_id=worker,
                lease_seconds=LEASE,
            )
        )
        if claim is not None:
            run = (claim.job_id, claim.phase, claim.attempt)
            assert run not in self.claimed, f"{run} was claimed twice"
            self.claimed.add(run)
            self.claims.append(claim)

    def _claim(self, pick: int) -> runs.Claim:
        return _recent_first(self.claims, pick)

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50), step=st.integers(1, 5))
    def progress(self, pick: int, step: int) -> None:
        claim = self._claim(pick)
        worker_call(
            lambda s: runs.report_progress(
                s,
                claim,
                step=step,
                total_steps=5,
                epoch=0,
                metrics={"loss": 1.0},
                lease_seconds=LEASE,
            )
        )

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50))
    def checkpoint(self, pick: int) -> None:
        claim = self._claim(pick)
        worker_call(
            lambda s: runs.record_checkpoint(
                s, claim, kind="step", key=f"{claim.run_prefix}/step-1", step=1, size=1, manifest={}
            )
        )

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50))
    def complete(self, pick: int) -> None:
        claim = self._claim(pick)
        worker_call(
            lambda s: runs.complete_phase(s, claim, output_key=claim.run_prefix, summary={})
        )

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50))
    def fail(self, pick: int) -> None:
        claim = self._claim(pick)
        worker_call(lambda s: runs.fail_phase(s, claim, code="phase_error", message="boom"))

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50))
    def stop_for_cancel(self, pick: int) -> None:
        """The run saw the cancel request (it asks at every report) and stopped."""
        claim = self._claim(pick)

        def stop(session: Session) -> None:
            if runs.heartbeat(session, claim, lease_seconds=LEASE):
                runs.acknowledge_cancel(session, claim)

        worker_call(stop)

    # -- time and the reaper -------------------------------------------------------------------

    @precondition(lambda self: self.claims)
    @rule(pick=st.integers(0, 50))
    def worker_dies(self, pick: int) -> None:
        """The run's worker stops heartbeating; its lease runs out."""
        claim = self._claim(pick)
        with session_scope() as session:
            session.execute(
                update(Phase)
                .where(
                    Phase.job_id == claim.job_id,
                    Phase.name == claim.phase,
                    Phase.attempt == claim.attempt,
                    Phase.status == "running",
                )
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
            )

    @rule(lost=st.booleans())
    def reaper_round(self, lost: bool) -> None:
        """A reaper round a while later; `lost`: the broker lost every waiting message."""
        self.broker.waiting = set() if lost else None
        with session_scope() as session:
            session.execute(
                update(Phase)
                .where(Phase.status == "queued")
                .values(sent_at=utcnow() - timedelta(seconds=10 * LEASE))
            )
        with session_scope() as session:
            reap(session, max_attempts=MAX_ATTEMPTS, resend_after_seconds=LEASE)

    # -- invariants ----------------------------------------------------------------------------

    @invariant()
    def the_store_is_consistent(self) -> None:
        with session_scope() as session:
            for job_id in self.job_ids:
                self._check_job(session, job_id)
        self.requeued.clear()

    def _check_job(self, session: Session, job_id: str) -> None:
        job = session.get(Job, job_id)
        assert job is not None
        statuses = [p.status for p in job.phases]
        derived = derive_job_status(statuses, cancel_requested=job.cancel_requested_at is not None)
        assert job.status == derived.value, (job.status, statuses)
        before = self.status.get(job_id)
        if before in TERMINAL_JOB and job_id not in self.requeued:
            assert job.status == before, f"job {job_id} left {before} without a requeue"
        if job.status in TERMINAL_JOB:
            assert job.finished_at is not None
            assert "queued" not in statuses and "running" not in statuses
            if job.status != before:
                self.terminal_entries[job_id] += 1
        self.status[job_id] = job.status
        events = Counter(e.type for e in session.query(Event).filter_by(job_id=job_id))
        assert sum(events[t] for t in JOB_EVENTS) == self.terminal_entries[job_id]
        sent = {(m.job_id, m.phase, m.attempt) for m in self.broker.sent}
        timings = session.query(PhaseTiming).filter_by(job_id=job_id).all()
        for phase in job.phases:
            if phase.status == "queued":  # its current attempt's message went out
                assert (job_id, phase.name, phase.attempt) in sent
            if phase.status == "running":
                assert phase.worker_id and phase.lease_expires_at is not None
            # a run is billed once: one timing row per released run, adding up to the phase
            rows = [t for t in timings if t.phase == phase.name]
            assert len({t.attempt for t in rows}) == len(rows)
            assert sum(t.billed_s for t in rows) == pytest.approx(phase.billed_seconds)

    def teardown(self) -> None:
        """Every job still reaches a terminal state when workers behave from now on."""
        try:
            for _ in range(4 * len(PHASES) * MAX_ATTEMPTS):
                if all(self.status.get(j) in TERMINAL_JOB for j in self.job_ids):
                    break
                self._behave()
                self.the_store_is_consistent()
            assert all(self.status.get(j) in TERMINAL_JOB for j in self.job_ids), self.status
        finally:
            dispatch.set_dispatcher(None)

    def _behave(self) -> None:
        """A healthy worker runs whatever is queued; a running phase's worker finishes it."""
        with session_scope() as session:
            live = [
                (p.job_id, p.name, p.attempt, p.status)
                for p in session.query(Phase).filter(Phase.status.in_(("queued", "running")))
            ]
        for job_id, name, attempt, status in live:
            claim = next(
                (
                    c
                    for c in self.claims
                    if (c.job_id, c.phase, c.attempt) == (job_id, name, attempt)
                ),
                None,
            )
            if status == "queued":
                claim = self._claim_as_healthy_worker(job_id, name, attempt)
            if claim is not None:
                self.stop_or_complete(claim)

    def _claim_as_healthy_worker(self, job_id: str, phase: str, attempt: int) -> runs.Claim | None:
        claim = worker_call(
            lambda s: runs.claim_phase(
                s, job_id=job_id, phase=phase, attempt=attempt, worker_id="w3", lease_seconds=LEASE
            )
        )
        if claim is not None:
            self.claims.append(claim)
        return claim

    def stop_or_complete(self, claim: runs.Claim) -> None:
        def finish(session: Session) -> None:
            if runs.heartbeat(session, claim, lease_seconds=LEASE):
                runs.acknowledge_cancel(session, claim)
            else:
                runs.complete_phase(session, claim, output_key=claim.run_prefix, summary={})

        worker_call(finish)


# Bounded for CI; RELAYTUNE_STATEFUL_EXAMPLES explores further.
EXAMPLES = int(os.environ.get("RELAYTUNE_STATEFUL_EXAMPLES", "12"))


def test_the_lifecycle_cannot_wedge(clean_db: None) -> None:
    # Thousands of small commits: this throwaway test database need not wait for each fsync.
    with db.get_engine().begin() as conn:
        conn.execute(text("SELECT set_config('synchronous_commit', 'off', false)"))
        name = conn.execute(text("SELECT current_database()")).scalar_one()
        conn.execute(text(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
    db.get_engine().dispose()
    run_state_machine_as_test(
        Lifecycle,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
