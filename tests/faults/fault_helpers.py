"""Shared by the fault tests: a small job on the example, and what must hold after a fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from orchestrator.db import session_scope
from orchestrator.models import Checkpoint, Event, Job, Phase, Tenant
from orchestrator.storage import get_store
from tests.factories import zip_folder
from tests.orchestrator import relay_helpers as relay

# The example's 10 training samples, 8 per optimizer step: 2 steps an epoch, 4 in the warmup,
# a checkpoint after every step. Validation and evaluation kept small to stay fast.
HP: dict[str, Any] = {
    "warmup_epochs": 2,
    "total_epochs": 3,
    "checkpoint_every_steps": 1,
    "keep_last_checkpoints": 2,
    "augmentation": {"enabled": False},
    "eval_max_new_tokens": 4,
}


def submit(example_dir: Path, base_model: str, tenant: str = "acme") -> str:
    """Upload the example and submit a job on it (the first phase is sent after commit)."""
    with session_scope() as session:
        tenant_id = session.scalar(select(Tenant.id).where(Tenant.name == tenant))
    return relay.submit(
        tenant_id or relay.new_tenant(tenant),
        base_model=base_model,
        hyperparameters=HP,
        data=zip_folder(example_dir),
        filename="example.zip",
    )


def phase(job_id: str, name: str) -> Phase:
    with session_scope() as session:
        row = session.scalar(select(Phase).where(Phase.job_id == job_id, Phase.name == name))
        assert row is not None
        session.expunge(row)
        return row


def job_status(job_id: str) -> str:
    with session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None
        return row.status


def events(job_id: str, type_: str, phase_: str | None = None) -> list[Event]:
    with session_scope() as session:
        query = select(Event).where(Event.job_id == job_id, Event.type == type_)
        if phase_ is not None:
            query = query.where(Event.phase == phase_)
        rows = list(session.scalars(query.order_by(Event.id)))
        for row in rows:
            session.expunge(row)
        return rows


def metric_steps(job_id: str, phase_: str, attempt: int) -> list[int]:
    return [int(e.data["step"]) for e in events(job_id, "metrics", phase_) if e.attempt == attempt]


def checkpoint_rows(job_id: str) -> list[Checkpoint]:
    with session_scope() as session:
        rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)))
        for row in rows:
            session.expunge(row)
        return rows


def assert_checkpoints_whole(job_id: str) -> None:
    """Every checkpoint a row points to (and every phase's resume point) is complete in the
    store: its manifest is there, and so is every file the manifest lists."""
    store = get_store()
    rows = checkpoint_rows(job_id)
    assert rows, f"job {job_id} recorded no checkpoint"
    for row in rows:
        keys = set(store.list(row.key.rstrip("/") + "/"))
        if row.kind == "adapter":  # the exported adapter has no manifest of its own
            assert f"{row.key}/adapter/adapter_model.safetensors" in keys, (row.key, keys)
            continue
        assert f"{row.key}/manifest.json" in keys, (row.key, keys)
        if row.kind == "artifact":  # its manifest lists the data set's images instead
            continue
        for entry in row.manifest["files"]:
            assert any(
                k == f"{row.key}/{entry}" or k.startswith(f"{row.key}/{entry}/") for k in keys
            ), (row.key, entry, keys)
    recorded = {row.key for row in rows}
    for name in ("preprocess", "warmup", "final"):
        resume_key = phase(job_id, name).resume_key
        assert resume_key is None or resume_key in recorded, (name, resume_key)


def final_adapter(job_id: str) -> dict[str, Any]:
    """The tensors of the adapter the job serves."""
    from safetensors.torch import load

    with session_scope() as session:
        row = session.get(Job, job_id)
        assert row is not None and row.adapter_key, f"job {job_id} has no adapter"
        key = f"{row.adapter_key}/adapter/adapter_model.safetensors"
    return dict(load(get_store().get_bytes(key)))


def assert_same_tensors(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Bit for bit: a resumed run repeats the uninterrupted one exactly."""
    import torch

    assert got.keys() == want.keys()
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name
