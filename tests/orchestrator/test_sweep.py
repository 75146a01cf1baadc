"""The orphan sweep deletes what no row points to, and nothing else."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner

from orchestrator import dispatch, runs
from orchestrator.db import session_scope
from orchestrator.models import utcnow
from orchestrator.storage import get_store
from orchestrator.sweep import sweep
from services.cli.main import app
from tests.factories import dataset_zip
from tests.orchestrator.relay_helpers import (
    claim,
    complete,
    expire_lease,
    new_tenant,
    run_reaper,
    submit,
)

GRACE = timedelta(hours=1)


def _put(*keys: str) -> None:
    for key in keys:
        get_store().put_bytes(key, b"x")


def _record(claim_: runs.Claim, kind: str, key: str) -> None:
    with session_scope() as session:
        runs.record_checkpoint(session, claim_, kind=kind, key=key, step=1, size=1, manifest={})


def _sweep(*, later: timedelta = 2 * GRACE, dry_run: bool = False) -> list[str]:
    with session_scope() as session:
        return sweep(
            session, get_store(), grace=GRACE, now=utcnow() + later, dry_run=dry_run
        ).deleted


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant())


def test_sweep_deletes_only_objects_no_row_points_to(job_id: str) -> None:
    pre = claim(job_id, "preprocess")
    artifact = f"{pre.run_prefix}/artifact.jsonl"
    _put(artifact, f"{pre.run_prefix}/manifest.json")
    complete(pre)
    warm = claim(job_id, "warmup")
    kept_checkpoint = f"{warm.run_prefix}/step-2/adapter.bin"
    half_written = f"{warm.run_prefix}/step-4/adapter.bin"  # uploaded, never recorded
    _put(kept_checkpoint, half_written)
    _record(warm, "step", f"{warm.run_prefix}/step-2")
    expire_lease(job_id, "warmup")
    run_reaper()  # attempt 2 is queued: whatever it uploads is still in flight
    in_flight = f"jobs/{job_id}/warmup/a2/step-1/adapter.bin"
    deleted_job = "jobs/00000000-0000-0000-0000-000000000000/final/a1/adapter/x.bin"
    _put(in_flight, deleted_job)

    assert _sweep(later=timedelta(0)) == []  # everything is younger than the grace period
    assert sorted(_sweep(dry_run=True)) == sorted([half_written, deleted_job])
    assert sorted(_sweep()) == sorted([half_written, deleted_job])
    store = get_store()
    for key in (artifact, kept_checkpoint, in_flight, f"jobs/{job_id}/dataset/dataset.zip"):
        assert store.exists(key), key
    assert not store.exists(half_written)


def test_sweep_keeps_a_jobs_copy_of_its_validation_data_set(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    job_id = submit(new_tenant(), validation_data=dataset_zip())
    assert _sweep() == []
    assert get_store().exists(f"jobs/{job_id}/dataset/validation.zip")


def test_relaytune_sweep_command(job_id: str) -> None:
    orphan = f"jobs/{job_id}/final/a9/adapter/x.bin"
    _put(orphan)
    result = CliRunner().invoke(app, ["sweep", "--grace-hours", "0", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert orphan in result.output
    assert get_store().exists(orphan)
    result = CliRunner().invoke(app, ["sweep", "--grace-hours", "0"])
    assert "deleted 1 orphaned objects" in result.output
    assert not get_store().exists(orphan)
