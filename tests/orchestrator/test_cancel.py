"""A cancel ends a job once, as cancelled, whatever the running phase does meanwhile."""

from __future__ import annotations

import pytest

from orchestrator import dispatch
from tests.orchestrator.relay_helpers import (
    cancel,
    claim,
    complete,
    event_types,
    expire_lease,
    job,
    new_tenant,
    run_reaper,
    submit,
)


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant())


def test_a_phase_that_finishes_after_a_cancel_ends_the_job_cancelled_once(job_id: str) -> None:
    pre = claim(job_id, "preprocess")
    cancel(job_id)
    complete(pre)  # the worker was at its last step when the cancel came
    finished = job(job_id)
    assert finished.status == "cancelled"
    assert [p.status for p in finished.phases] == ["succeeded", "cancelled", "cancelled"]
    assert [p.attempt for p in finished.phases] == [1, 0, 0]
    assert [t.attempt for t in finished.timings] == [1]  # one attempt billed
    assert event_types(job_id).count("job_cancelled") == 1
    assert run_reaper() == 0  # nothing left running for the reaper to re-run


def test_the_reaper_closes_a_dead_run_of_a_cancelled_job_instead_of_requeueing_it(
    job_id: str, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    complete(claim(job_id, "preprocess"))
    claim(job_id, "warmup")
    cancel(job_id)  # the a10 worker is already dead and never sees the request
    expire_lease(job_id, "warmup")
    sent_before = len(recorded_dispatch.sent)
    assert run_reaper() == 1
    finished = job(job_id)
    assert finished.status == "cancelled"
    assert finished.finished_at is not None
    assert [p.status for p in finished.phases] == ["succeeded", "cancelled", "cancelled"]
    assert finished.phases[1].attempt == 1
    assert len(recorded_dispatch.sent) == sent_before  # nothing re-sent to train again
    assert event_types(job_id).count("job_cancelled") == 1
    assert run_reaper() == 0
