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

from orchestrator.db import session_scope
from orchestrator.models import PhaseTiming
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
