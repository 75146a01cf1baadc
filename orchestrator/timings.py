"""Where a run's billed time went: one PhaseTiming row per run (attempt) of a phase.

The billed interval runs from claim to release, so the row is written by whatever releases
the run (complete, fail, cancel acknowledged, or the reaper) in the same transaction that
closes the meter. The worker measures the named components; `other_s` is the rest, so the
components and `other_s` add up to `billed_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime

from sqlalchemy.orm import Session

from orchestrator.cost import as_utc
from orchestrator.model_shapes import model_key_for
from orchestrator.models import Phase, PhaseTiming

# Named components a worker measures, in the order a run passes through them. model_fetch
# (making a registered base model local) happens inside startup and is not part of startup_s.
COMPONENTS = (
    "startup",
    "model_fetch",
    "input_download",
    "train",
    "evaluate",
    "export",
    "checkpoint_upload",
)


@dataclass
class RunTiming:
    """What a worker measured of one run: plain numbers, so the orchestrator needs no torch.

    model_fetch_s is making a registered base model local: download and verify on a cache
    miss, the cache lock and a look on a hit.

    train_s is the phase's main work: the training loop with its in-loop validation for warmup
    and final, building the artifact for preprocess. It excludes checkpoint uploads, which are
    checkpoint_upload_s. validation_samples counts held-out samples scored in this run, every
    pass (in-loop validation and the final evaluation) counted, as samples counts every epoch.
    """

    startup_s: float = 0.0
    model_fetch_s: float = 0.0
    input_download_s: float = 0.0
    train_s: float = 0.0
    evaluate_s: float = 0.0
    export_s: float = 0.0
    checkpoint_upload_s: float = 0.0
    samples: int = 0
    tokens: int = 0
    validation_samples: int = 0
    checkpoints: int = 0
    input_bytes: int = 0
    peak_memory_bytes: int | None = None
    precision: str | None = None
    device: str | None = None
    micro_batch: int | None = None
    lora_targets: str | None = None
    model_key: str | None = None
    fused: bool = False
    # A registered base model was already in the node's cache (True) or fetched (False); None
    # for a model that is not fetched from the object store (the default, the model root).
    model_cache_hit: bool | None = None

    def named_seconds(self) -> float:
        return sum(float(getattr(self, f"{name}_s")) for name in COMPONENTS)


def queue_wait_seconds(phase: Phase) -> float:
    if phase.queued_at is None or phase.started_at is None:
        return 0.0
    return max(0.0, (as_utc(phase.started_at) - as_utc(phase.queued_at)).total_seconds())


def record_run_timing(
    session: Session,
    phase: Phase,
    *,
    outcome: str,
    billed_s: float,
    timing: RunTiming | None,
    now: datetime,
) -> PhaseTiming:
    """Write the run's row; call before the phase's attempt or timestamps are reset.

    Without a timing (a reaped run, a caller that measured nothing) the row still carries the
    billed seconds, all of them as other_s, so sums over rows never lose billed time."""
    measured = timing or RunTiming()
    # Worker and job store clocks differ a little; never let the rest go negative.
    other_s = max(0.0, billed_s - measured.named_seconds())
    row = PhaseTiming(
        job_id=phase.job_id,
        phase=phase.name,
        attempt=phase.attempt,
        pool=phase.pool,
        outcome=outcome,
        worker_id=phase.worker_id,
        queue_wait_s=queue_wait_seconds(phase),
        other_s=other_s,
        billed_s=billed_s,
        created_at=now,
        **{f.name: getattr(measured, f.name) for f in fields(measured)},
    )
    # Known without the worker, so even a reaped run's row is filed under its model.
    row.model_key = measured.model_key or model_key_for(phase.job.base_model)
    session.add(row)
    return row
