"""A run's line back to the job store: lease heartbeats, progress, checkpoints, cancel flag."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from time import monotonic
from typing import Any

from orchestrator import budgets, runs
from orchestrator.budgets import BudgetStop
from orchestrator.db import session_scope
from orchestrator.errors import LeaseLost
from orchestrator.events import EventType
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore, delete_prefix, publish_dir
from worker.timing import PhaseClock

logger = logging.getLogger(__name__)


class Reporter:
    """Fenced writes for one claim; a background thread renews the lease between them."""

    def __init__(self, claim: runs.Claim, store: ObjectStore, settings: Settings,
                 clock: PhaseClock | None = None):
        self.claim = claim
        self.store = store
        self.settings = settings
        self.clock = clock or PhaseClock()
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        # Set when the job's budget or the tenant's limit would be passed by one more step.
        self.budget_stop: BudgetStop | None = None
        self._last_step_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_seconds):
            try:
                with session_scope() as session:
                    if runs.heartbeat(session, self.claim,
                                      lease_seconds=self.settings.lease_seconds):
                        self.cancel_requested.set()
            except LeaseLost:
                self.lease_lost.set()
                return
            except Exception:  # a missed beat is retried; the lease has slack for it
                logger.exception("lease heartbeat failed")

    def should_stop(self) -> bool:
        return (self.cancel_requested.is_set() or self.lease_lost.is_set()
                or self.budget_stop is not None)

    def progress(self, step: int, total_steps: int, epoch: int, metrics: dict[str, float]) -> None:
        # The last step's duration (evaluation included) stands for the next one's; the first
        # step of a run has no predecessor, so only what was spent so far counts for it.
        now = monotonic()
        step_seconds = now - self._last_step_at if self._last_step_at is not None else 0.0
        self._last_step_at = now
        with session_scope() as session:
            if runs.report_progress(session, self.claim, step=step, total_steps=total_steps,
                                    epoch=epoch, metrics=metrics,
                                    lease_seconds=self.settings.lease_seconds):
                self.cancel_requested.set()
            self.budget_stop = budgets.stop_for_budget(
                session, self.claim.job_id, self.claim.phase, seconds_ahead=step_seconds)

    def checkpoint(self, local_dir: Path, key: str, *, kind: str, step: int) -> None:
        """Upload the directory, manifest last, then record it: only then does it exist.
        Older resumable checkpoints beyond the job's keep-last are forgotten, then deleted."""
        with self.clock.measure("checkpoint_upload"):
            self._publish(local_dir, key, kind=kind, step=step)
        self.clock.count(checkpoints=1)

    def _publish(self, local_dir: Path, key: str, *, kind: str, step: int) -> None:
        size = publish_dir(self.store, local_dir, key)
        manifest: dict[str, Any] = {}
        manifest_path = local_dir / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
        # Validated, so a job stored before the field existed gets the same default.
        keep = self.claim.hyperparameters.keep_last_checkpoints
        with session_scope() as session:
            runs.record_checkpoint(session, self.claim, kind=kind, key=key, step=step,
                                   size=size, manifest=manifest)
            pruned = runs.prune_checkpoints(session, self.claim, keep=keep)
        for prefix in pruned:  # the rows are gone: nobody can be pointed at these any more
            delete_prefix(self.store, prefix)

    def best_checkpoint_key(self, step: int) -> str | None:
        with session_scope() as session:
            return runs.best_checkpoint_key(session, self.claim, step=step)

    def event(self, type_: str, data: dict[str, Any]) -> None:
        with session_scope() as session:
            runs.record_event(session, self.claim, EventType(type_), data)
