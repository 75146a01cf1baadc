"""A healthy run keeps its lease through the reporter's heartbeats, however short the lease."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from orchestrator import dispatch, runs
from orchestrator.db import session_scope
from orchestrator.settings import Settings, get_settings
from orchestrator.storage import get_store
from tests.orchestrator.relay_helpers import event_types, job, new_tenant, run_reaper, submit
from worker.reporting import Reporter

SHORT_LEASE = 4


@pytest.fixture
def short_lease(service_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The settings a worker reads when only RELAYTUNE_LEASE_SECONDS is set, and short."""
    monkeypatch.setenv("RELAYTUNE_LEASE_SECONDS", str(SHORT_LEASE))
    monkeypatch.delenv("RELAYTUNE_HEARTBEAT_SECONDS", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_running_phase_is_not_reaped_while_its_reporter_beats(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    short_lease: Settings,
) -> None:
    job_id = submit(new_tenant())
    with session_scope() as session:
        claim = runs.claim_phase(
            session,
            job_id=job_id,
            phase="preprocess",
            attempt=1,
            worker_id="w1",
            lease_seconds=short_lease.lease_seconds,
        )
    with Reporter(claim, get_store(), short_lease) as reporter:
        # A reaper running often, for two whole leases: the claim's own renewal runs out in one.
        until = time.monotonic() + 2 * SHORT_LEASE
        while time.monotonic() < until:
            run_reaper(resend_after_seconds=SHORT_LEASE)
            time.sleep(0.5)
        assert not reporter.lease_lost.is_set()
    phase = job(job_id).phases[0]
    assert (phase.name, phase.status, phase.attempt) == ("preprocess", "running", 1)
    assert "lease_expired" not in event_types(job_id)
