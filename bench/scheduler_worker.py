"""A relaytune worker whose phases do nothing: the scheduler bench's stand-in trainer.

Everything around a phase is the production path (Celery worker with the production flags,
preloaded parent, stale-delivery check, fresh child, claim, lease, reporter, completion and
the dispatch of the next phase); only the work between claim and completion returns at once.
Nothing in relaytune reads a flag for this: the patch lives here, in a bench-only entry
point, and is inherited by every child the worker forks.

Usage: python -m bench.scheduler_worker --pool t4 [--loglevel INFO]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from orchestrator.runs import Claim


def noop_phase(claim: Claim, store: Any, work: Path, *_: Any) -> tuple[str, dict[str, Any]]:
    """Completes at once with an output key of the run's own, as a real phase would."""
    return f"{claim.run_prefix}/noop", {}


def no_model(base_model: str, *_: Any, **__: Any) -> str:
    # No phase loads a model here, so none is resolved or checked.
    return ""


def install_noop_trainer() -> None:
    from worker import phases, runner

    for name in phases.PHASE_RUNNERS:
        phases.PHASE_RUNNERS[name] = noop_phase
    runner.ensure_base_model = no_model


def undo_freeze_after_setup() -> None:
    """The bench's "before" configuration: the parent's heap left unfrozen, as it was before
    worker.preload.freeze_heap, so both can be measured alternately in the same bench."""
    import gc

    from celery import signals

    import worker.celery_app  # noqa: F401  (its setup handler runs first, this one after)

    signals.celeryd_after_setup.connect(lambda **_: gc.unfreeze(), weak=False)


def use_celery_prefork_pool() -> None:
    """The bench's "before" configuration of the pool: Celery's own prefork pool, which forks a
    replacement child only once it finds the old one reaped (worker.pool)."""
    from worker.celery_app import app

    app.conf.worker_pool = "prefork"


def leave_children_cold() -> None:
    """The bench's "before" configuration of the child: it connects only when its phase has
    arrived (no worker.child_warmup)."""
    from worker import child_warmup

    child_warmup.start = lambda: None  # type: ignore[assignment,return-value]


def main(argv: list[str]) -> None:
    install_noop_trainer()
    if os.environ.get("BENCH_UNFROZEN_PARENT"):
        undo_freeze_after_setup()
    if os.environ.get("BENCH_CELERY_PREFORK_POOL"):
        use_celery_prefork_pool()
    if os.environ.get("BENCH_COLD_CHILD"):
        leave_children_cold()
    from services.cli.main import app

    app(["worker", *argv])


if __name__ == "__main__":
    main(sys.argv[1:])
