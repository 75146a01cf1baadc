"""A run's line back to the job store: lease heartbeats, progress, checkpoints, cancel flag.

The job store can be out of reach for a while (a restart, a failover, a network blip). A run
rides that out: its writes are retried with backoff for as long as its claim can still be
valid, that is until the lease it last renewed would have expired. Only then does it give up,
as a run that lost its lease: by that time the reaper may have handed the phase to a new
attempt, and the fencing refuses this run's writes anyway.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any, TypeVar

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    wait_exponential,
    wait_random,
)

from orchestrator import budgets, runs
from orchestrator.budgets import BudgetStop
from orchestrator.db import session_scope
from orchestrator.errors import LeaseLost
from orchestrator.events import EventType
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore, delete_prefix, publish_dir
from worker import shutdown
from worker.timing import PhaseClock

logger = logging.getLogger(__name__)

T = TypeVar("T")

# What a lost or refused database connection raises (psycopg: OperationalError; a connection
# found closed: InterfaceError; SQLite's "database is locked" is an OperationalError too).
# Anything else is a real error of the write and is not retried.
STORE_UNREACHABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)

# Backoff between tries: 0.5 s doubling up to 5 s, with jitter so that the workers of a
# machine do not all knock at once when the store comes back.
_BACKOFF = wait_exponential(multiplier=0.5, max=5) + wait_random(0, 0.5)

LAPSED = "the job store stayed out of reach until the lease expired"


def _sleep_unless(event: threading.Event | None) -> Callable[[float], None]:
    """A backoff sleep that ends early when `event` is set."""
    if event is None:
        return time.sleep

    def sleep(seconds: float) -> None:
        event.wait(seconds)

    return sleep


@dataclass(frozen=True)
class _Progress:
    step: int
    total_steps: int
    epoch: int
    metrics: dict[str, float]
    step_seconds: float


class Reporter:
    """Fenced writes for one claim; a background thread renews the lease between them."""

    def __init__(
        self,
        claim: runs.Claim,
        store: ObjectStore,
        settings: Settings,
        clock: PhaseClock | None = None,
        *,
        leased_at: float | None = None,
    ):
        """`leased_at`: the monotonic time just before the claim's write (the lease runs
        from then); now, when not given."""
        self.claim = claim
        self.store = store
        self.settings = settings
        self.clock = clock or PhaseClock()
        self.cancel_requested = threading.Event()
        self.lease_lost = threading.Event()
        self.lease_lost_because = ""  # why, once lease_lost is set
        # Set when the job's budget or the tenant's limit would be passed by one more step.
        self.budget_stop: BudgetStop | None = None
        self._last_step_at: float | None = None
        self._lease_lock = threading.Lock()
        # Local reckoning of the lease: taken before each renewing write was sent, so it ends
        # no later than the lease the store holds.
        self._lease_until = (
            monotonic() if leased_at is None else leased_at
        ) + settings.lease_seconds
        self._store_down = threading.Event()
        self._pending: _Progress | None = None  # the newest progress not yet written
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> Reporter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    # -- the lease ---------------------------------------------------------------------------

    def lease_left(self) -> float:
        """Seconds until the lease this run last renewed expires (negative: it has)."""
        with self._lease_lock:
            return self._lease_until - monotonic()

    def _lose_lease(self, because: str) -> None:
        if not self.lease_lost.is_set():
            self.lease_lost_because = because
            self.lease_lost.set()

    def _renewed(self, sent_at: float) -> None:
        with self._lease_lock:
            self._lease_until = max(self._lease_until, sent_at + self.settings.lease_seconds)

    def _beat(self) -> None:
        while not self._stop.is_set():
            # A failed progress write wakes the heartbeat early: it retries the store now.
            self._wake.wait(self.settings.heartbeat_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                if self._write(self._heartbeat, renews=True, unless=self._stop):
                    self.cancel_requested.set()
            except LeaseLost:
                return  # the training loop sees lease_lost at its next step
            except STORE_UNREACHABLE:
                return  # the run is ending; nothing left to keep alive
            except Exception:  # a missed beat is retried; the lease has slack for it
                logger.exception("lease heartbeat failed")

    def _heartbeat(self, session: Session) -> bool:
        return runs.heartbeat(session, self.claim, lease_seconds=self.settings.lease_seconds)

    def should_stop(self) -> bool:
        if self.lease_left() <= 0:  # the store stayed out of reach for a whole lease
            self._lose_lease(LAPSED)
        return (
            self.cancel_requested.is_set()
            or self.lease_lost.is_set()
            or self.budget_stop is not None
            or self.shutting_down()
        )

    @staticmethod
    def shutting_down() -> bool:
        """The worker is being stopped: the run checkpoints and hands its phase back."""
        return shutdown.requested.is_set()

    # -- writes ------------------------------------------------------------------------------

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run `fn` in a transaction of its own, retried through a store outage while the
        lease lasts. Raises LeaseLost when the phase is no longer this run's, or the store
        stayed out of reach until it could no longer be. Progress still owed is written
        first, so a phase never ends showing an older step than it reached."""
        self._flush_progress(retry=True)
        return self._write(fn, renews=False)

    def _write(
        self,
        fn: Callable[[Session], T],
        *,
        renews: bool,
        retry: bool = True,
        unless: threading.Event | None = None,
    ) -> T:
        """`renews`: the write renews the lease. `retry`: retry through an outage while the
        lease lasts (else one try). `unless`: stop retrying as soon as this is set."""

        def once() -> T:
            sent_at = monotonic()
            try:
                with session_scope() as session:
                    result = fn(session)
            except LeaseLost as exc:
                self._lose_lease(exc.message)
                raise
            if renews:
                self._renewed(sent_at)
            self._store_is_back()
            return result

        if not retry:
            return once()
        retrying = Retrying(
            retry=retry_if_exception_type(STORE_UNREACHABLE),
            wait=self._wait_within_lease,
            stop=lambda _: self.lease_left() <= 0 or (unless is not None and unless.is_set()),
            sleep=_sleep_unless(unless),
            before_sleep=self._store_is_down,
            reraise=True,
        )
        try:
            return retrying(once)
        except STORE_UNREACHABLE as exc:
            if self.lease_left() > 0:  # told to stop retrying (the run is ending)
                raise
            self._lose_lease(LAPSED)
            raise LeaseLost(LAPSED) from exc

    def _wait_within_lease(self, retry_state: RetryCallState) -> float:
        # The last try comes as the lease runs out, not a backoff step after it.
        return max(0.0, min(_BACKOFF(retry_state), self.lease_left()))

    def _store_is_down(self, retry_state: RetryCallState) -> None:
        if not self._store_down.is_set():
            self._store_down.set()
            error = retry_state.outcome.exception() if retry_state.outcome else None
            logger.warning(
                "job store out of reach (%s); retrying the writes of %s of job %s "
                "attempt %d for up to %.0f s, until its lease would expire",
                type(error).__name__,
                self.claim.phase,
                self.claim.job_id,
                self.claim.attempt,
                self.lease_left(),
            )

    def _store_is_back(self) -> None:
        if self._store_down.is_set():
            self._store_down.clear()
            logger.info(
                "job store reachable again; %s of job %s goes on",
                self.claim.phase,
                self.claim.job_id,
            )

    # -- what a run reports ------------------------------------------------------------------

    def progress(self, step: int, total_steps: int, epoch: int, metrics: dict[str, float]) -> None:
        # The last step's duration (evaluation included) stands for the next one's; the first
        # step of a run has no predecessor, so only what was spent so far counts for it.
        now = monotonic()
        step_seconds = now - self._last_step_at if self._last_step_at is not None else 0.0
        self._last_step_at = now
        self._pending = _Progress(step, total_steps, epoch, dict(metrics), step_seconds)
        # While the store is out of reach, training does not wait for it: one try per step
        # would stall every step, and retrying until it is back would stall the whole run.
        # So the newest step's progress is kept (it supersedes the ones before it) and
        # written by the next step once the heartbeat, which retries the store with
        # backoff, has found it back. The skipped steps' metrics events are not recorded,
        # and the budget is checked again only then. The run still stops if the store stays
        # away for the whole lease (should_stop).
        if self._store_down.is_set():
            return
        try:
            self._flush_progress(retry=False)
        except STORE_UNREACHABLE as exc:
            self._store_down.set()
            self._wake.set()
            logger.warning(
                "job store out of reach (%s) at step %d of %s of job %s; training "
                "goes on, its progress is written once the store is back",
                type(exc).__name__,
                step,
                self.claim.phase,
                self.claim.job_id,
            )

    def _flush_progress(self, *, retry: bool) -> None:
        pending = self._pending
        if pending is None:
            return

        def write(session: Session) -> tuple[bool, BudgetStop | None]:
            cancel = runs.report_progress(
                session,
                self.claim,
                step=pending.step,
                total_steps=pending.total_steps,
                epoch=pending.epoch,
                metrics=pending.metrics,
                lease_seconds=self.settings.lease_seconds,
            )
            return cancel, budgets.stop_for_budget(
                session, self.claim.job_id, self.claim.phase, seconds_ahead=pending.step_seconds
            )

        cancel, self.budget_stop = self._write(write, renews=True, retry=retry)
        self._pending = None
        if cancel:
            self.cancel_requested.set()

    def checkpoint(self, local_dir: Path, key: str, *, kind: str, step: int) -> None:
        """Upload the directory, manifest last, then record it: only then does it exist.
        Older resumable checkpoints beyond the job's keep-last are forgotten, then deleted.
        The local directory stays as it is until the record is written: the training loop
        waits here for the store (while the lease lasts) before it moves on."""
        with self.clock.measure("checkpoint_upload"):
            self._publish(local_dir, key, kind=kind, step=step)
        self.clock.count(checkpoints=1)

    def _publish(self, local_dir: Path, key: str, *, kind: str, step: int) -> None:
        size = publish_dir(self.store, local_dir, key)
        manifest: dict[str, Any] = {}
        manifest_path = local_dir / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
        keep = self.claim.hyperparameters.keep_last_checkpoints

        def record(session: Session) -> list[str]:
            runs.record_checkpoint(
                session, self.claim, kind=kind, key=key, step=step, size=size, manifest=manifest
            )
            return runs.prune_checkpoints(session, self.claim, keep=keep)

        pruned = self.write(record)
        for prefix in pruned:  # the rows are gone: nobody can be pointed at these any more
            delete_prefix(self.store, prefix)

    def event(self, type_: str, data: dict[str, Any]) -> None:
        self.write(lambda session: runs.record_event(session, self.claim, EventType(type_), data))
