"""Deletes objects under jobs/ that no row of the job store points to, after a grace period:
checkpoints uploaded but never recorded, half-written ones, outputs of lost attempts, and
whatever a deleted job left behind.

A row points at a key or at a prefix (a checkpoint directory, a phase's output). A prefix
covers what is under it, except another checkpoint directory of the same run: the artifact
and the export lie at the top of their run's prefix (see orchestrator.layout), above that
run's checkpoints, which live and die by their own rows. The attempt of a phase that is queued
or running is left alone whatever its age, since a run records its uploads only once they are
complete.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from orchestrator import repository
from orchestrator.layout import JOBS_PREFIX, is_checkpoint_dir, listing_prefix, run_prefix
from orchestrator.storage import ObjectStore

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    deleted: list[str]
    kept: int


def is_referenced(key: str, refs: set[str]) -> bool:
    parts = key.split("/")
    for end in range(len(parts), 0, -1):
        prefix = "/".join(parts[:end])
        if prefix in refs:
            rest = "/".join(parts[end:])
            if not rest or not is_checkpoint_dir(rest):
                return True
    return False


def sweep(
    session: Session, store: ObjectStore, *, grace: timedelta, now: datetime, dry_run: bool = False
) -> SweepResult:
    raw_refs, live = repository.stored_object_refs(session)
    refs = {ref.rstrip("/") for ref in raw_refs if ref}
    in_flight = tuple(
        listing_prefix(run_prefix(job, phase, attempt)) for job, phase, attempt in live
    )
    deleted: list[str] = []
    kept = 0
    for key, modified in sorted(store.list_modified(JOBS_PREFIX).items()):
        if modified > now - grace or key.startswith(in_flight) or is_referenced(key, refs):
            kept += 1
            continue
        if not dry_run:
            store.delete(key)
        deleted.append(key)
    if deleted:
        logger.info(
            "sweep: %s %d objects no row points to (%d kept)",
            "would delete" if dry_run else "deleted",
            len(deleted),
            kept,
        )
    return SweepResult(deleted=deleted, kept=kept)
