"""The API's reaper round does nothing while another replica runs one, and its work after."""

from __future__ import annotations

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round
from services.api.lifespan import _reap_once
from tests.orchestrator.relay_helpers import claim, complete, expire_lease, job, new_tenant, submit


def test_a_reaper_round_is_skipped_while_another_replica_runs_one(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = submit(new_tenant())
    complete(claim(job_id, "preprocess"))
    claim(job_id, "warmup")
    expire_lease(job_id, "warmup")

    def warmup_attempt() -> int:
        return next(p.attempt for p in job(job_id).phases if p.name == "warmup")

    with session_scope() as other_replica:
        assert take_round(other_replica, Round.REAPER)
        _reap_once()
        assert warmup_attempt() == 1  # left to the replica holding the round
    _reap_once()
    assert warmup_attempt() == 2  # re-queued once, by this round
