"""A job's timeline as Server-Sent Events: the backlog, then each event as it is written.

The stream polls the events table every POLL_SECONDS, each time in a short transaction of its
own, so an open stream holds no database session or connection between polls; this works the
same on PostgreSQL and SQLite. Each message is `id: <event id>`, `event: <event type>`,
`data: <the event as GET /v1/jobs/{id}/events lists it>`. Once the job is finished (succeeded,
failed or cancelled) and its last event has been sent, one `event: end` message with
`data: {"status": <job status>}` and no id closes the stream.

Event ids are taken when a row is inserted but seen when its transaction commits, so two
transactions writing to one job (a worker's progress, a user's cancel) may make id 11 visible
before id 10. The stream looks again below the ids it sent for LATE_SECONDS and sends such a
late event when it appears, so within one stream nothing is missed; ids then arrive out of
order, and a client resuming should send the greatest id it has seen.

The API key is checked once when the stream opens, and again by a poll every KEY_CHECK_SECONDS
(in the same transaction, one read by primary key). Once it is revoked or has expired, one
`event: error` message with the 401 the key would now get as `data` (`{"error": {"code":
"api_key_revoked", ...}}`) and no id closes the stream: a revoked key stops reading a job's
events within seconds, not when the job ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sse_starlette import EventSourceResponse, ServerSentEvent

from orchestrator import auth, repository
from orchestrator.db import session_scope
from orchestrator.errors import Unauthorized
from orchestrator.events import late_events
from orchestrator.lifecycle import TERMINAL_JOB, JobStatus
from services.api.schemas import EventOut

POLL_SECONDS = 0.5
# A comment line this often keeps proxies and load balancers from closing a quiet stream.
PING_SECONDS = 15
PAGE = 200
# Longer than any transaction that writes events stays open after taking an event id.
LATE_SECONDS = 10.0
# How long a revoked or expired key may go on reading: often enough to matter, rarely enough
# that a thousand open streams cost the database little.
KEY_CHECK_SECONDS = 5.0


@dataclass
class _Cursor:
    """What this stream has sent: every id up to `floor`, and the ids in `sent` above it."""

    floor: int
    sent: dict[int, float] = field(default_factory=dict)  # id -> when it was sent

    @property
    def last(self) -> int:
        return max(self.sent, default=self.floor)

    def mark(self, event_id: int) -> None:
        self.sent[event_id] = time.monotonic()

    def settle(self) -> None:
        """Raise the floor past ids sent LATE_SECONDS ago: nothing below them is coming now."""
        cutoff = time.monotonic() - LATE_SECONDS
        old = [i for i, sent_at in self.sent.items() if sent_at < cutoff]
        if old:
            self.floor = max(self.floor, *old)
            self.sent = {i: t for i, t in self.sent.items() if i > self.floor}


@dataclass(frozen=True)
class _Poll:
    events: list[EventOut]
    more: bool  # a full page: more backlog is waiting
    finished: JobStatus | None
    refused: Unauthorized | None = None  # the key is no longer good: send nothing more


def _poll(job_id: str, cursor: _Cursor, *, recheck_key: str | None) -> _Poll:
    """The events after the cursor; first, when `recheck_key` names a key, whether it is still
    good (if not, no events are read: the poll that finds a key revoked sends none)."""
    with session_scope() as session:
        if recheck_key is not None:
            try:
                auth.recheck_key(session, recheck_key)
            except Unauthorized as refused:
                return _Poll([], more=False, finished=None, refused=refused)
        # The status is read before the events: a job seen finished has already committed its
        # last event, so the reads below see it.
        status = JobStatus(repository.job_by_id(session, job_id).status)
        last = cursor.last
        rows = list(repository.events(session, job_id, after=last, limit=PAGE))
        more = len(rows) == PAGE
        if not more:
            late = late_events(session, job_id, above=cursor.floor, upto=last, seen=cursor.sent)
            rows = [*late, *rows]
        events = [EventOut.model_validate(e, from_attributes=True) for e in rows]
    return _Poll(events, more, status if status in TERMINAL_JOB else None)


async def follow(
    job_id: str, *, after: int, key_id: str, poll_seconds: float = POLL_SECONDS
) -> AsyncIterator[ServerSentEvent]:
    """The job's events after `after`, until the job is finished and all of them are sent, or
    until key `key_id` (which the request was authenticated with) is no longer good."""
    cursor = _Cursor(floor=after)
    key_checked_at = time.monotonic()  # the request authenticated it just now
    while True:
        recheck = time.monotonic() - key_checked_at >= KEY_CHECK_SECONDS
        poll = await asyncio.to_thread(
            _poll, job_id, cursor, recheck_key=key_id if recheck else None
        )
        if recheck:
            key_checked_at = time.monotonic()
        if poll.refused is not None:
            yield ServerSentEvent(json.dumps({"error": poll.refused.to_dict()}), event="error")
            return
        for event in poll.events:
            yield ServerSentEvent(event.model_dump_json(), id=str(event.id), event=event.type)
            cursor.mark(event.id)
        if poll.more:
            continue
        if poll.finished is not None:
            yield ServerSentEvent(json.dumps({"status": poll.finished.value}), event="end")
            return
        cursor.settle()
        await asyncio.sleep(poll_seconds)


def event_stream(job_id: str, *, after: int, key_id: str) -> EventSourceResponse:
    return EventSourceResponse(follow(job_id, after=after, key_id=key_id), ping=PING_SECONDS)
