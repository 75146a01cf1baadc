"""Driving the relay the way workers and users do, one committed transaction per action."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from orchestrator import jobs, runs
from orchestrator.datasets import create_dataset
from orchestrator.db import session_scope
from orchestrator.models import Event, Job, Phase, Tenant, utcnow
from orchestrator.reaper import reap
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from tests.factories import dataset_zip

LEASE = 60


def new_tenant(name: str = "acme") -> str:
    with session_scope() as session:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
        return tenant.id


SHORT_RUN = {"warmup_epochs": 2, "total_epochs": 3}


def submit(
    tenant_id: str,
    *,
    base_model: str = "tiny",
    hyperparameters: dict[str, Any] | None = SHORT_RUN,
    pools: dict[str, str] | None = None,
    data: bytes | None = None,
    filename: str = "d.zip",
    validation_data: bytes | None = None,
) -> str:
    """Upload a data set (by default a small one) and submit a job on it; returns the job's
    id. The first phase's task is sent after the commit. `validation_data`: a second data
    set to upload and name as the job's validation set."""
    with session_scope() as session:
        dataset = create_dataset(
            session,
            get_store(),
            get_settings(),
            tenant_id=tenant_id,
            filename=filename,
            data=dataset_zip() if data is None else data,
        )
        validation = (
            None
            if validation_data is None
            else create_dataset(
                session,
                get_store(),
                get_settings(),
                tenant_id=tenant_id,
                filename="validation.zip",
                data=validation_data,
            )
        )
        job = jobs.submit_job(
            session,
            get_store(),
            tenant_id=tenant_id,
            dataset_id=dataset.id,
            base_model=base_model,
            hyperparameters=hyperparameters,
            pools=pools,
            metadata=None,
            validation_dataset_id=validation.id if validation else None,
        )
        return job.id


def claim(job_id: str, phase: str, attempt: int = 1, worker: str = "w1") -> runs.Claim:
    with session_scope() as session:
        return runs.claim_phase(
            session,
            job_id=job_id,
            phase=phase,
            attempt=attempt,
            worker_id=worker,
            lease_seconds=LEASE,
        )


def complete(claim_: runs.Claim) -> None:
    with session_scope() as session:
        runs.complete_phase(session, claim_, output_key=claim_.run_prefix, summary={})


def cancel(job_id: str) -> None:
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        jobs.cancel_job(session, job.tenant_id, job_id)


def expire_lease(job_id: str, phase: str, *, heartbeat_ago: float = 0.0) -> None:
    """As if the worker died: its lease ran out (its last heartbeat `heartbeat_ago` s ago)."""
    now = utcnow()
    values: dict[str, object] = {"lease_expires_at": now - timedelta(seconds=1)}
    if heartbeat_ago:
        values["heartbeat_at"] = now - timedelta(seconds=heartbeat_ago)
    with session_scope() as session:
        session.execute(
            update(Phase).where(Phase.job_id == job_id, Phase.name == phase).values(**values)
        )


def run_reaper(max_attempts: int = 3, resend_after_seconds: int = LEASE) -> int:
    with session_scope() as session:
        return reap(session, max_attempts=max_attempts, resend_after_seconds=resend_after_seconds)


def job(job_id: str) -> Job:
    with session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None
        _ = [(p.status, p.attempt) for p in row.phases], list(row.timings)
        return row


def event_types(job_id: str) -> list[str]:
    with session_scope() as session:
        return [e.type for e in session.query(Event).filter_by(job_id=job_id).order_by(Event.id)]
