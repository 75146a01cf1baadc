"""Sending phase tasks to their pool's queue, only after the transaction that queued them commits.

A rolled-back transaction sends nothing; a crash between commit and send leaves a queued phase
that the reaper sends again (the claim's fencing makes the duplicate harmless).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import event
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

_PENDING = "relaytune_pending_dispatch"


def default_queue(pool: str) -> str:
    """The queue a pool's workers listen on unless the pool names another."""
    return f"gpu.{pool}"


@dataclass(frozen=True)
class PhaseMessage:
    job_id: str
    phase: str
    attempt: int
    pool: str
    # The pool's queue column at the time of sending; empty in messages from before it existed.
    queue: str = ""

    def to_payload(self) -> dict[str, Any]:
        """The task's one keyword argument: ids only, JSON."""
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> PhaseMessage:
        """A delivered payload; ValueError when it is not one this class wrote."""
        try:
            return cls(
                job_id=str(payload["job_id"]),
                phase=str(payload["phase"]),
                attempt=int(payload["attempt"]),
                pool=str(payload["pool"]),
                queue=str(payload.get("queue", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a phase message: {payload!r}") from exc

    @property
    def task_name(self) -> str:
        return f"relaytune.phase.{self.phase}"

    @property
    def route(self) -> str:
        return self.queue or default_queue(self.pool)

    @property
    def task_id(self) -> str:
        """The same for every send of one attempt, so the broker can be asked whether the
        attempt's message is still waiting."""
        return f"relaytune-{self.job_id}-{self.phase}-a{self.attempt}"


class Dispatcher(Protocol):
    def send(self, message: PhaseMessage) -> None: ...

    def waiting_task_ids(self, queues: Collection[str]) -> set[str] | None:
        """Task ids of messages waiting in these queues or held unacknowledged by a worker;
        None when the broker cannot be asked."""

    def live_workers(self) -> dict[str, list[str]] | None:
        """Workers answering now, with the queues each consumes; None when unknown."""


class CeleryDispatcher:
    """Sends by task name: the orchestrator never imports the worker package."""

    def __init__(self, broker_url: str):
        from celery import Celery

        self.broker_url = broker_url
        self.app = Celery("relaytune-orchestrator", broker=broker_url)
        self.app.conf.update(
            task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True
        )

    def send(self, message: PhaseMessage) -> None:
        self.app.send_task(
            message.task_name,
            kwargs={"payload": message.to_payload()},
            queue=message.route,
            task_id=message.task_id,
        )

    def waiting_task_ids(self, queues: Collection[str]) -> set[str] | None:
        if not self.broker_url.startswith(("redis://", "rediss://", "unix://")):
            return None
        from orchestrator.redis_queues import waiting_task_ids

        return waiting_task_ids(self.broker_url, queues)

    def live_workers(self) -> dict[str, list[str]] | None:
        try:
            replies = self.app.control.inspect(timeout=1.0).active_queues() or {}
        except Exception:  # broker unreachable: nothing can be said about workers
            logger.warning("could not ask the broker which workers are live", exc_info=True)
            return None
        return {host: [q["name"] for q in queues or []] for host, queues in replies.items()}


class RecordingDispatcher:
    """Keeps messages in memory; for callers that deliver them themselves."""

    def __init__(self) -> None:
        self.sent: list[PhaseMessage] = []
        # What the broker would say; tests set these (None: it cannot be asked).
        self.waiting: set[str] | None = None
        self.workers: dict[str, list[str]] | None = None

    def send(self, message: PhaseMessage) -> None:
        self.sent.append(message)

    def waiting_task_ids(self, queues: Collection[str]) -> set[str] | None:
        return None if self.waiting is None else set(self.waiting)

    def live_workers(self) -> dict[str, list[str]] | None:
        return self.workers


_dispatcher: Dispatcher | None = None


def set_dispatcher(dispatcher: Dispatcher | None) -> None:
    global _dispatcher
    _dispatcher = dispatcher


def get_dispatcher() -> Dispatcher:
    global _dispatcher
    if _dispatcher is None:
        from orchestrator.settings import get_settings

        _dispatcher = CeleryDispatcher(get_settings().broker_url)
    return _dispatcher


def defer(session: Session, message: PhaseMessage) -> None:
    session.info.setdefault(_PENDING, []).append(message)


def withdraw(session: Session, *, job_id: str, phase: str, attempt: int) -> bool:
    """Take back a message deferred in this transaction (its phase is being run in-process)."""
    pending: list[PhaseMessage] = session.info.get(_PENDING, [])
    kept = [m for m in pending if (m.job_id, m.phase, m.attempt) != (job_id, phase, attempt)]
    session.info[_PENDING] = kept
    return len(kept) != len(pending)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    messages: list[PhaseMessage] = session.info.pop(_PENDING, [])
    for message in messages:
        try:
            get_dispatcher().send(message)
        except Exception:  # the row stays queued; the reaper re-sends it
            logger.exception("could not send %s for job %s", message.task_name, message.job_id)


@event.listens_for(Session, "after_rollback")
def _drop_after_rollback(session: Session, *_: Any) -> None:
    session.info.pop(_PENDING, None)
