"""One Celery task per phase kind. Each takes a JSON payload of ids, never ORM objects."""

from __future__ import annotations

import logging
import socket
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from orchestrator.errors import PhaseNotClaimable
from worker.celery_app import app
from worker.runner import run_phase

logger = logging.getLogger(__name__)

# Stale deliveries are dropped in the parent process, before they cost a child.
DROP_STALE = "worker.strategy:drop_stale_deliveries"


def _run(task: Task, payload: dict[str, Any]) -> None:
    worker_id = f"{task.request.hostname or socket.gethostname()}/{task.request.id}"
    try:
        run_phase(payload, worker_id=worker_id)
    except PhaseNotClaimable as exc:
        # At-least-once delivery: a duplicate or stale message finds its phase already claimed
        # (or moved on). The job store is the truth, so the delivery is dropped on purpose.
        logger.info("ignoring delivery: %s", exc.message)
        raise Ignore() from exc


@app.task(name="relaytune.phase.preprocess", bind=True, Strategy=DROP_STALE)
def preprocess(self: Task, payload: dict[str, Any]) -> None:
    _run(self, payload)


@app.task(name="relaytune.phase.warmup", bind=True, Strategy=DROP_STALE)
def warmup(self: Task, payload: dict[str, Any]) -> None:
    _run(self, payload)


@app.task(name="relaytune.phase.final", bind=True, Strategy=DROP_STALE)
def final(self: Task, payload: dict[str, Any]) -> None:
    _run(self, payload)
