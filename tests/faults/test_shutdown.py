"""A worker told to stop (SIGTERM, as a preemption or a scale-down sends it) while a phase runs:
the phase checkpoints, is handed back as a new attempt without waiting for its lease to run
out, and another worker finishes it with the adapter of a run that was never interrupted.

Real PostgreSQL, Redis, S3 and Celery worker processes (the fleet of test_process_faults)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from orchestrator import dispatch, runs
from orchestrator.db import session_scope
from orchestrator.errors import LeaseLost
from orchestrator.models import PhaseTiming
from orchestrator.settings import get_settings
from tests.faults import test_process_faults as process_faults
from tests.faults.fault_helpers import (
    assert_checkpoints_whole,
    assert_same_tensors,
    events,
    final_adapter,
    metric_steps,
    phase,
    submit,
)
from tests.faults.flaky_s3 import FlakyS3, Request
from tests.faults.test_process_faults import (
    JOB_TIMEOUT_S,
    WARMUP_STEPS,
    Fleet,
    _wait_for_job,
    _wait_until,
)
from tests.orchestrator import relay_helpers as relay

# The module-scoped worker fleet, its broker and S3 proxy, and the uninterrupted run's adapter:
# this module gets its own, as test_process_faults does.
broker = process_faults.broker
s3_proxy = process_faults.s3_proxy
fleet = process_faults.fleet
reference_adapter = process_faults.reference_adapter


def _timings(job_id: str, name: str) -> list[tuple[int, str]]:
    with session_scope() as session:
        rows = session.scalars(
            select(PhaseTiming).where(PhaseTiming.job_id == job_id, PhaseTiming.phase == name)
        )
        return sorted((row.attempt, row.outcome) for row in rows)


# -- the job store's side: what a hand-back writes -------------------------------------------


def _hand_back(claim: runs.Claim) -> None:
    with session_scope() as session:
        runs.hand_back_phase(session, claim, reason="worker_shutdown")


def test_a_handed_back_phase_is_queued_as_the_next_attempt_and_its_run_billed_once(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = relay.submit(relay.new_tenant())
    relay.complete(relay.claim(job_id, "preprocess"))
    claim = relay.claim(job_id, "warmup")
    _hand_back(claim)

    warmup = phase(job_id, "warmup")
    assert (warmup.status, warmup.attempt, warmup.worker_id) == ("queued", 2, None)
    assert [m.attempt for m in recorded_dispatch.sent if m.phase == "warmup"] == [1, 2]
    requeued = events(job_id, "phase_requeued", "warmup")
    assert [(e.attempt, e.data["reason"]) for e in requeued] == [(1, "worker_shutdown")]
    queued = events(job_id, "phase_queued", "warmup")
    assert [(e.attempt, e.data["reason"]) for e in queued][-1] == (2, "worker_shutdown")
    assert _timings(job_id, "warmup") == [(1, "queued")]
    # The stopped run can write nothing more, the hand-back included.
    with pytest.raises(LeaseLost):
        _hand_back(claim)
    assert _timings(job_id, "warmup") == [(1, "queued")]
    relay.claim(job_id, "warmup", attempt=2)  # the next delivery takes it


def test_a_phase_is_handed_back_even_when_it_has_used_its_attempts(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    """A shutdown is not the phase's failure: it goes on, whatever attempts it used."""
    job_id = relay.submit(relay.new_tenant())
    relay.complete(relay.claim(job_id, "preprocess"))
    max_attempts = get_settings().max_attempts
    for attempt in range(1, max_attempts + 1):
        _hand_back(relay.claim(job_id, "warmup", attempt=attempt))
    warmup = phase(job_id, "warmup")
    assert (warmup.status, warmup.attempt) == ("queued", max_attempts + 1)


def test_a_phase_of_a_job_being_cancelled_is_cancelled_instead_of_handed_back(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = relay.submit(relay.new_tenant())
    relay.complete(relay.claim(job_id, "preprocess"))
    claim = relay.claim(job_id, "warmup")
    relay.cancel(job_id)
    _hand_back(claim)
    warmup = phase(job_id, "warmup")
    assert (warmup.status, warmup.attempt) == ("cancelled", 1)
    assert not events(job_id, "phase_requeued", "warmup")
    assert relay.job(job_id).status == "cancelled"


# -- a real worker -----------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_worker_sent_sigterm_mid_warmup_hands_the_phase_back_and_another_worker_finishes_it(
    clean_db: None,
    fleet: Fleet,
    s3_proxy: FlakyS3,
    reference_adapter: dict[str, Any],
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    s3_proxy.reset()
    job_id = submit(example_dir, tiny_model_dir)
    step_3 = f"jobs/{job_id}/warmup/a1/step-3"

    # The warmup is under way: step 3's checkpoint is going up, held by the proxy.
    def training_state(r: Request) -> bool:
        return r.method == "PUT" and r.key == f"{step_3}/training_state.pt"

    hold = s3_proxy.hold(training_state)
    assert hold.arrived.wait(JOB_TIMEOUT_S), "step 3's checkpoint upload never started"
    worker = fleet.worker
    worker.process.send_signal(signal.SIGTERM)
    log = fleet.logs / f"worker-{fleet.started}.log"
    _wait_until(
        lambda: "asked 1 running phase(s) to checkpoint" in log.read_text(errors="replace"),
        "the worker to pass the shutdown on to its phase",
        logs=fleet.logs,
    )
    hold.release()

    # The worker exits of its own accord once the phase is handed back.
    assert worker.process.wait(timeout=JOB_TIMEOUT_S) == 0
    warmup = phase(job_id, "warmup")
    assert (warmup.status, warmup.attempt) == ("queued", 2)
    assert warmup.resume_key == step_3  # the checkpoint the stopped run finished saving
    handed_back = events(job_id, "phase_requeued", "warmup")
    assert [(e.attempt, e.data["reason"]) for e in handed_back] == [(1, "worker_shutdown")]
    assert not events(job_id, "lease_expired")  # no lease had to run out
    assert _timings(job_id, "warmup") == [(1, "queued")]  # the stopped run billed once

    fleet.worker = fleet._start()  # the phase resumes elsewhere
    assert _wait_for_job(job_id, fleet) == "succeeded"
    assert phase(job_id, "warmup").attempt == 2
    assert metric_steps(job_id, "warmup", 2) == list(range(4, WARMUP_STEPS + 1))
    assert _timings(job_id, "warmup") == [(1, "queued"), (2, "succeeded")]
    assert_checkpoints_whole(job_id)
    assert_same_tensors(final_adapter(job_id), reference_adapter)
