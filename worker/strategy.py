"""Drops a stale delivery in the worker's parent process, before it costs a child process.

Delivery is at-least-once, and the reaper may re-send a message it believes lost, so a worker
sometimes receives a phase attempt that is no longer queued (already claimed, finished, or
re-queued as a newer attempt). The claim in the child would refuse it anyway; checking here
first spares a fork and a fresh child (one per phase). The check is one indexed read over a
pooled connection (opening one per delivery cost more than the read); a forked child drops
the connections it inherits unused (orchestrator.db.forget_inherited_connections). When the
check cannot be made, the delivery goes on to the child, whose claim decides.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from celery import Celery, Task
from celery.worker.strategy import default
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import repository
from orchestrator.db import make_engine
from orchestrator.dispatch import PhaseMessage
from orchestrator.settings import get_settings

logger = logging.getLogger(__name__)


@cache
def _parent_sessions() -> sessionmaker[Session]:
    return sessionmaker(make_engine(get_settings().database_url))


def is_stale(message: PhaseMessage) -> bool:
    try:
        with _parent_sessions()() as session:
            return not repository.attempt_is_queued(
                session, message.job_id, message.phase, message.attempt
            )
    except Exception:  # unknown: let the child's claim decide
        logger.debug("could not check a delivery before running it", exc_info=True)
        return False


def _phase_message(message: Any) -> PhaseMessage | None:
    try:
        _args, kwargs, _embed = message.decode()
        return PhaseMessage.from_payload(kwargs["payload"])
    except Exception:  # not ours to judge: the task itself will refuse it
        return None


def drop_stale_deliveries(task: Task, app: Celery, consumer: Any, **options: Any) -> Any:
    """Celery's default strategy, behind the staleness check."""
    handle = default(task, app, consumer, **options)

    def on_message(
        message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **kwargs: Any
    ) -> Any:
        phase_message = _phase_message(message)
        if phase_message is not None and is_stale(phase_message):
            logger.info(
                "dropped a stale delivery of %s (job %s attempt %s): the attempt is "
                "no longer queued",
                task.name,
                phase_message.job_id,
                phase_message.attempt,
            )
            ack(logger, consumer.connection_errors)
            return None
        return handle(message, body, ack, reject, callbacks, **kwargs)

    return on_message
