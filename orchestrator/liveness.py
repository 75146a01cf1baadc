"""What a phase's status alone hides: a running phase whose worker stopped renewing its lease
is `stalled`; a queued phase whose pool no worker has served lately is `waiting_for_worker`.

A running phase proves its worker alive by its lease. Idle workers are seen by the reaper: each
round it asks the broker which workers consume which queues (Celery's `inspect active_queues`,
which a worker's parent process answers even while its child trains a phase) and records when
each was last seen, one row per worker.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy.orm import Session

from orchestrator import read_cache, repository
from orchestrator.cost import as_utc
from orchestrator.lifecycle import PhaseStatus
from orchestrator.models import Phase, Worker

# A few reaper rounds: a worker not seen for this long is taken to be gone.
SEEN_WITHIN = timedelta(seconds=120)
# Rows of workers gone for this long are forgotten.
FORGET_AFTER = timedelta(days=1)


class PhaseDetail(StrEnum):
    STALLED = "stalled"
    WAITING_FOR_WORKER = "waiting_for_worker"


def record_workers(session: Session, seen: Mapping[str, Sequence[str]], now: datetime) -> None:
    """Note the workers that answered (hostname -> queues they consume) as seen now."""
    for hostname, queues in seen.items():
        row = session.get(Worker, hostname) or Worker(hostname=hostname)
        row.queues = ",".join(sorted(set(queues)))[:1000]
        row.last_seen_at = now
        session.add(row)
    repository.forget_workers_seen_before(session, now - FORGET_AFTER)
    read_cache.clear_after_commit(session)


_served: read_cache.TtlCache[frozenset[str]] = read_cache.new_cache()


def served_queues(session: Session, now: datetime) -> frozenset[str]:
    """Queues some worker consumed lately."""
    return frozenset(live_workers_by_queue(session, now))


def served_queues_to_show(session: Session, now: datetime) -> frozenset[str]:
    """served_queues as a job read shows it: an answer at most a few seconds old (see
    orchestrator.read_cache); it only tells whether a queued phase shows `waiting_for_worker`,
    which takes a pool unserved for SEEN_WITHIN."""
    return _served.get(session, lambda: served_queues(session, now))


def live_workers_by_queue(session: Session, now: datetime) -> dict[str, list[Worker]]:
    """Queue -> the workers seen consuming it lately, by hostname."""
    by_queue: dict[str, list[Worker]] = defaultdict(list)
    rows = repository.workers_seen_since(session, now - SEEN_WITHIN)
    for row in sorted(rows, key=lambda row: row.hostname):
        for queue in row.queues.split(","):
            if queue:
                by_queue[queue].append(row)
    return dict(by_queue)


def phase_detail(
    phase: Phase, queue: str, served: frozenset[str] | None, now: datetime
) -> PhaseDetail | None:
    """Why a phase is not moving, when the store can tell; `served` None means unknown."""
    if (
        phase.status == PhaseStatus.RUNNING
        and phase.lease_expires_at is not None
        and as_utc(phase.lease_expires_at) <= now
    ):
        return PhaseDetail.STALLED
    waited_long = phase.queued_at is not None and as_utc(phase.queued_at) <= now - SEEN_WITHIN
    if (
        phase.status == PhaseStatus.QUEUED
        and served is not None
        and queue not in served
        and waited_long
    ):
        return PhaseDetail.WAITING_FOR_WORKER
    return None
