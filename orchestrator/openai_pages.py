"""Cursor pages for the OpenAI-compatible routes: newest first, `after` names the last item of
the previous page, and one row more than asked tells whether there is a next page."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from orchestrator import repository
from orchestrator.errors import InvalidRequest, NotFound
from orchestrator.models import Checkpoint, Event, Job
from orchestrator.openai_compat import TRAINING_KINDS

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    has_more: bool


def _page(rows: Sequence[T], limit: int) -> Page[T]:
    return Page(rows[:limit], len(rows) > limit)


def jobs_after(session: Session, tenant_id: str, *, after: str | None, limit: int) -> Page[Job]:
    query = select(Job).where(Job.tenant_id == tenant_id)
    if after is not None:
        try:
            cursor = repository.job_for_tenant(session, tenant_id, after)
        except NotFound as exc:
            raise NotFound(f"job {after} not found", param="after") from exc
        query = query.where(
            (Job.created_at < cursor.created_at)
            | ((Job.created_at == cursor.created_at) & (Job.id < cursor.id))
        )
    rows = session.scalars(
        query.options(selectinload(Job.phases), selectinload(Job.timings))
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit + 1)
    ).all()
    return _page(rows, limit)


def event_cursor(after: str | None) -> int | None:
    """Event ids are integers on the wire as strings."""
    if after is None:
        return None
    if not after.isdigit() or len(after) > 18:
        raise InvalidRequest(f"after must be an event id, not '{after}'", param="after")
    return int(after)


def events_before(session: Session, job_id: str, *, after: str | None, limit: int) -> Page[Event]:
    query = select(Event).where(Event.job_id == job_id)
    cursor = event_cursor(after)
    if cursor is not None:
        query = query.where(Event.id < cursor)
    rows = session.scalars(query.order_by(Event.id.desc()).limit(limit + 1)).all()
    return _page(rows, limit)


def checkpoints_after(
    session: Session, job_id: str, *, after: str | None, limit: int
) -> Page[Checkpoint]:
    """Training checkpoints (an adapter to use), not the preprocess artifact or the export."""
    query = select(Checkpoint).where(
        Checkpoint.job_id == job_id, Checkpoint.kind.in_(TRAINING_KINDS)
    )
    if after is not None:
        cursor = session.get(Checkpoint, after)
        if cursor is None or cursor.job_id != job_id:
            raise NotFound(f"checkpoint {after} not found in job {job_id}", param="after")
        query = query.where(
            (Checkpoint.created_at < cursor.created_at)
            | ((Checkpoint.created_at == cursor.created_at) & (Checkpoint.id < cursor.id))
        )
    rows = session.scalars(
        query.order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc()).limit(limit + 1)
    ).all()
    return _page(rows, limit)
