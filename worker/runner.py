"""Runs one delivery of a phase: claim, work in a scratch directory, report the outcome.

When the next phase is queued on this worker's pool, the same process claims and runs it
right away (same-pool fusion, see orchestrator/fusion.py), reusing what it holds."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from orchestrator import budgets, fusion, runs
from orchestrator.base_models import resolve_base_model
from orchestrator.dataformats.common import public_message
from orchestrator.db import session_scope
from orchestrator.dispatch import PhaseMessage
from orchestrator.errors import LeaseLost, RelaytuneError
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import model_key_for
from orchestrator.settings import TINY_MODEL_NAME, Settings, get_settings
from orchestrator.storage import get_store
from worker.phases import PHASE_RUNNERS, Handover, PhaseStopped
from worker.reporting import Reporter
from worker.timing import PhaseClock, lora_targets_label

logger = logging.getLogger(__name__)


def _error_code(exc: BaseException) -> str:
    if isinstance(exc, RelaytuneError):
        return exc.code
    if isinstance(exc, SoftTimeLimitExceeded):
        return "time_limit_exceeded"
    if type(exc).__name__ == "OutOfMemoryError":
        return "out_of_memory"
    return "phase_error"


def public_error(exc: BaseException, settings: Settings) -> str:
    """The failure as the job shows it: model paths by their name under the model root, and
    no heap addresses."""
    text = (exc.message if isinstance(exc, RelaytuneError)
            else f"{type(exc).__name__}: {exc}")
    root = str(settings.model_root)
    text = text.replace(root + "/", "").replace(root, "<model root>")
    return public_message(text)[:2000]


def ensure_base_model(base_model: str, settings: Settings) -> str:
    """Where this worker loads the job's base model from. The default is the tiny Qwen3-VL,
    which every worker can write for itself (the same bytes everywhere: it is seeded), so
    pools on other machines need no shared volume for it."""
    model = resolve_base_model(base_model, settings)
    if model.name == TINY_MODEL_NAME == settings.default_base_model:
        from worker.tiny_model import write_tiny_model

        write_tiny_model(Path(model.location), seed=0)  # returns at once when already there
    return model.location


def _refused_for_budget(claim: runs.Claim, clock: PhaseClock) -> bool:
    """A job that has spent its budget fails the phase now, before any download or load."""
    with session_scope() as session:
        stop = budgets.stop_for_budget(session, claim.job_id, claim.phase, at_claim=True)
        if stop is not None:
            logger.warning("%s of job %s refused: %s", claim.phase, claim.job_id, stop.message)
            runs.fail_phase(session, claim, code=stop.code, message=stop.message,
                            timing=clock.timing())
    return stop is not None


def start_clock(claim: runs.Claim) -> PhaseClock:
    """The run's clock, started at claim, with what the claim alone tells about the run."""
    clock = PhaseClock()
    clock.note(model_key=model_key_for(claim.base_model))
    if claim.phase != "preprocess":  # training settings would only split preprocess profiles
        hp = Hyperparameters.model_validate(claim.hyperparameters)
        clock.note(lora_targets=lora_targets_label(hp.target_modules), micro_batch=hp.batch_size)
    return clock


def run_phase(payload: dict[str, Any], *, worker_id: str) -> None:
    """Raises PhaseNotClaimable for a delivery that does not own the phase."""
    message = PhaseMessage(**payload)
    settings = get_settings()
    with session_scope() as session:
        claim: runs.Claim | None = runs.claim_phase(
            session, job_id=message.job_id, phase=message.phase, attempt=message.attempt,
            worker_id=worker_id, lease_seconds=settings.lease_seconds)
    handover = Handover()
    fused = False
    with tempfile.TemporaryDirectory(prefix=f"relaytune-{message.phase}-") as tmp:
        while claim is not None:
            claim = _run_claim(claim, Path(tmp) / claim.phase, handover, worker_id=worker_id,
                               fused=fused)
            fused = True


def _run_claim(claim: runs.Claim, work: Path, handover: Handover, *, worker_id: str,
               fused: bool) -> runs.Claim | None:
    """Run one claimed phase to its outcome; returns the next phase's claim when this process
    is to run it too."""
    settings = get_settings()
    store = get_store()
    clock = start_clock(claim)
    clock.facts.fused = fused
    logger.info("claimed %s of job %s (attempt %d%s)", claim.phase, claim.job_id, claim.attempt,
                ", fused with the previous phase" if fused else "")
    if _refused_for_budget(claim, clock):
        return None
    work.mkdir(parents=True, exist_ok=True)
    with Reporter(claim, store, settings, clock) as reporter:
        try:
            with clock.measure("startup"):
                ensure_base_model(claim.base_model, settings)
            output_key, summary = PHASE_RUNNERS[claim.phase](claim, store, work, reporter,
                                                             handover)
        except PhaseStopped:
            if reporter.lease_lost.is_set():
                logger.warning("lost the lease of %s; stopping without writing", claim.phase)
                return None
            stop = None if reporter.cancel_requested.is_set() else reporter.budget_stop
            with session_scope() as session:
                if stop is not None:  # failed, with its stop checkpoint as the resume point
                    runs.fail_phase(session, claim, code=stop.code, message=stop.message,
                                    timing=clock.timing())
                else:
                    runs.acknowledge_cancel(session, claim, timing=clock.timing())
            return None
        except LeaseLost:
            logger.warning("lost the lease of %s; a newer attempt owns it", claim.phase)
            return None
        except Exception as exc:
            logger.exception("phase %s of job %s failed", claim.phase, claim.job_id)
            with session_scope() as session:
                runs.fail_phase(
                    session, claim, code=_error_code(exc),
                    message=public_error(exc, settings),
                    details=exc.details if isinstance(exc, RelaytuneError) else None,
                    timing=clock.timing(),
                )
            return None
        with session_scope() as session:
            runs.complete_phase(session, claim, output_key=output_key, summary=summary,
                                timing=clock.timing())
            if not settings.fuse_same_pool_phases:
                return None
            return fusion.continue_on_same_pool(session, claim, worker_id=worker_id,
                                                lease_seconds=settings.lease_seconds)
