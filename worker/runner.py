"""Runs one delivery of a phase: claim, work in a scratch directory, report the outcome.

When the next phase is queued on this worker's pool, the same process claims and runs it
right away (same-pool fusion, see orchestrator/fusion.py), reusing what it holds."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy.orm import Session

from orchestrator import budgets, fusion, runs
from orchestrator.budgets import BudgetStop
from orchestrator.dataformats.common import public_message
from orchestrator.db import session_scope
from orchestrator.dispatch import PhaseMessage
from orchestrator.errors import LeaseLost, RelaytuneError
from orchestrator.model_files import needs_weights
from orchestrator.model_shapes import model_key_for
from orchestrator.settings import TINY_MODEL_NAME, Settings, get_settings
from orchestrator.storage import get_store
from worker.model_cache import resolve_local_model
from worker.phases import PHASE_RUNNERS, Handover, PhaseStopped
from worker.recipe.oom import is_out_of_memory
from worker.reporting import Reporter
from worker.timing import PhaseClock, lora_targets_label
from worker.tiny_model import is_complete

logger = logging.getLogger(__name__)


# A store that stopped answering after its own retries may answer the next attempt: the phase is
# queued again (resuming from its latest recorded checkpoint) while attempts remain.
RETRYABLE_CODES = frozenset({"object_store_unavailable", "unavailable"})


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, RelaytuneError):
        return exc.code
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time_limit_exceeded"
    if is_out_of_memory(exc):
        return "out_of_memory"
    return "phase_error"


def public_error(exc: BaseException, settings: Settings) -> str:
    """The failure as the job shows it: model paths by their name under the model root, and
    no heap addresses."""
    text = exc.message if isinstance(exc, RelaytuneError) else f"{type(exc).__name__}: {exc}"
    root = str(settings.model_root)
    text = text.replace(root + "/", "").replace(root, "<model root>")
    return public_message(text)[:2000]


def ensure_base_model(
    base_model: str, settings: Settings, clock: PhaseClock | None = None, *, weights: bool = True
) -> str:
    """Where this worker loads the job's base model from. Nothing is written here: the tiny
    default is written by `relaytune up` or `relaytune make-tiny-model` (docker-compose runs
    it before its workers), so a worker that lacks it fails the phase at once, before it
    downloads anything the job pays for. A registered model is fetched into the node's model
    cache (worker/model_cache.py), measured on the clock as the run's model fetch; without
    `weights`, all of it but the weights."""
    model = resolve_local_model(base_model, settings, clock, weights=weights)
    if model.name == TINY_MODEL_NAME and not is_complete(Path(model.location)):
        raise RelaytuneError(
            f"the default model {TINY_MODEL_NAME} is not written on this worker; run "
            "`relaytune make-tiny-model` where the worker runs, then requeue the phase",
            param="base_model",
            code="base_model_missing",
        )
    return model.location


def _refused_for_budget(claim: runs.Claim, reporter: Reporter) -> bool:
    """A job that has spent its budget fails the phase now, before any download or load."""

    def check(session: Session) -> BudgetStop | None:
        stop = budgets.stop_for_budget(session, claim.job_id, claim.phase, at_claim=True)
        if stop is not None:
            runs.fail_phase(
                session, claim, code=stop.code, message=stop.message, timing=reporter.clock.timing()
            )
        return stop

    stop = reporter.write(check)
    if stop is not None:
        logger.warning("%s of job %s refused: %s", claim.phase, claim.job_id, stop.message)
    return stop is not None


def start_clock(claim: runs.Claim) -> PhaseClock:
    """The run's clock, started at claim, with what the claim alone tells about the run."""
    clock = PhaseClock()
    clock.note(model_key=model_key_for(claim.base_model))
    if claim.phase != "preprocess":  # training settings would only split preprocess profiles
        hp = claim.hyperparameters
        clock.note(lora_targets=lora_targets_label(hp.target_modules), micro_batch=hp.batch_size)
    return clock


@dataclass(frozen=True)
class Leased:
    """A claim, and the monotonic time just before the write that took it: its lease runs
    from then."""

    claim: runs.Claim
    at: float


def run_phase(payload: dict[str, Any], *, worker_id: str) -> None:
    """Raises PhaseNotClaimable for a delivery that does not own the phase."""
    message = PhaseMessage.from_payload(payload)
    settings = get_settings()
    sent_at = monotonic()
    with session_scope() as session:
        claim = runs.claim_phase(
            session,
            job_id=message.job_id,
            phase=message.phase,
            attempt=message.attempt,
            worker_id=worker_id,
            lease_seconds=settings.lease_seconds,
        )
    leased: Leased | None = Leased(claim, sent_at)
    handover = Handover()
    fused = False
    with tempfile.TemporaryDirectory(prefix=f"relaytune-{message.phase}-") as tmp:
        while leased is not None:
            leased = _run_claim(
                leased, Path(tmp) / leased.claim.phase, handover, worker_id=worker_id, fused=fused
            )
            fused = True


def _run_claim(
    leased: Leased, work: Path, handover: Handover, *, worker_id: str, fused: bool
) -> Leased | None:
    """Run one claimed phase to its outcome; returns the next phase's claim when this process
    is to run it too."""
    claim = leased.claim
    settings = get_settings()
    clock = start_clock(claim)
    clock.facts.fused = fused
    logger.info(
        "claimed %s of job %s (attempt %d%s)",
        claim.phase,
        claim.job_id,
        claim.attempt,
        ", fused with the previous phase" if fused else "",
    )
    with Reporter(claim, get_store(), settings, clock, leased_at=leased.at) as reporter:
        try:
            if _refused_for_budget(claim, reporter):
                return None
            work.mkdir(parents=True, exist_ok=True)
            return _run_and_record(claim, work, handover, reporter, worker_id=worker_id)
        except LeaseLost as exc:
            # Expected when the reaper re-queued the phase first (the store stayed out of
            # reach, or this worker stalled): the newer attempt owns it, so this run stops
            # without writing. One line says so; a traceback would read as a failure.
            logger.warning(
                "job %s phase %s attempt %d lost its lease, stopping without writing: %s",
                claim.job_id,
                claim.phase,
                claim.attempt,
                reporter.lease_lost_because or exc.message,
            )
            return None


def _run_and_record(
    claim: runs.Claim, work: Path, handover: Handover, reporter: Reporter, *, worker_id: str
) -> Leased | None:
    """The phase's work, then its outcome written through the reporter (retried while the
    store is out of reach). Raises LeaseLost when the phase is no longer this run's."""
    settings = get_settings()
    clock = reporter.clock
    try:
        with clock.measure("startup"):
            # Resolved once per run: the phase loads the model from here, never looks again.
            # Preprocessing reads the processor and configs only, so it fetches no weights.
            model_dir = ensure_base_model(
                claim.base_model, settings, clock, weights=needs_weights(claim.phase)
            )
        output_key, summary = PHASE_RUNNERS[claim.phase](
            claim, reporter.store, work, reporter, handover, model_dir
        )
    except PhaseStopped:
        if reporter.lease_lost.is_set():
            raise LeaseLost(reporter.lease_lost_because) from None
        stop = None if reporter.cancel_requested.is_set() else reporter.budget_stop
        if stop is not None:  # failed, with its stop checkpoint as the resume point
            reporter.write(
                lambda session: runs.fail_phase(
                    session, claim, code=stop.code, message=stop.message, timing=clock.timing()
                )
            )
        elif not reporter.cancel_requested.is_set() and reporter.shutting_down():
            # Re-queued; the next attempt resumes from the checkpoint the loop just saved.
            reporter.write(
                lambda session: runs.hand_back_phase(
                    session, claim, reason="worker_shutdown", timing=clock.timing()
                )
            )
            logger.warning(
                "worker shutting down: handed %s of job %s (attempt %d) back",
                claim.phase,
                claim.job_id,
                claim.attempt,
            )
        else:
            reporter.write(
                lambda session: runs.acknowledge_cancel(session, claim, timing=clock.timing())
            )
        return None
    except LeaseLost:
        raise
    except Exception as exc:
        logger.exception("phase %s of job %s failed", claim.phase, claim.job_id)
        code, message = _error_code(exc), public_error(exc, settings)
        details = exc.details if isinstance(exc, RelaytuneError) else None
        if code in RETRYABLE_CODES:
            reporter.write(
                lambda session: runs.retry_or_fail_phase(
                    session,
                    claim,
                    code=code,
                    message=message,
                    max_attempts=settings.max_attempts,
                    timing=clock.timing(),
                )
            )
            return None
        reporter.write(
            lambda session: runs.fail_phase(
                session, claim, code=code, message=message, details=details, timing=clock.timing()
            )
        )
        return None

    def complete(session: Session) -> Leased | None:
        runs.complete_phase(
            session, claim, output_key=output_key, summary=summary, timing=clock.timing()
        )
        if not settings.fuse_same_pool_phases or reporter.shutting_down():
            return None  # a worker shutting down leaves the next phase to another
        sent_at = monotonic()
        nxt = fusion.continue_on_same_pool(
            session, claim, worker_id=worker_id, lease_seconds=settings.lease_seconds
        )
        return None if nxt is None else Leased(nxt, sent_at)

    return reporter.write(complete)
