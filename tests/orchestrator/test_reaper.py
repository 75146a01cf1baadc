"""The reaper: what it does with dead runs and waiting phases, and that it says so."""

from __future__ import annotations

import logging

import pytest

from orchestrator import dispatch
from tests.orchestrator.relay_helpers import (
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
