"""A stand-in for the API's live event stream, `GET /v1/jobs/{id}/events?stream=true`, as its
specification reads (`id:`, `event: <type>`, `data: <event JSON>`; resumable with
`Last-Event-ID`; `event: end` once the job has finished and its last event is sent), so the
dashboard's stream reader is tested whether or not this server streams. It is harsher than a
good server: CRLF line ends split between CR and LF across writes, keepalive comments, and a
connection dropped after every few events, which the reader must resume."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from orchestrator import repository
from orchestrator.db import session_scope
from orchestrator.models import Job
from services.api.schemas import EventOut

STREAM_PATH = re.compile(r"/v1/jobs/([^/]+)/events")
TERMINAL = {"succeeded", "failed", "cancelled"}
POLL_S = 0.2
IDLE_DROP_S = 5.0  # as a proxy drops a quiet connection


@dataclass
class StreamLog:
    """What the stand-in saw and did, for the test to assert on."""

    cut_after: int = 3  # events per connection before it is dropped
    last_event_ids: list[int] = field(default_factory=list)  # per connection, 0: none sent
    authorizations: set[str] = field(default_factory=set)


class EventStreamStandIn(BaseHTTPMiddleware):
    def __init__(self, app: object, log: StreamLog) -> None:
        super().__init__(app)  # type: ignore[arg-type]
        self.log = log

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        match = STREAM_PATH.fullmatch(request.url.path)
        if match is None or request.query_params.get("stream") != "true":
            return await call_next(request)
        after = int(request.headers.get("last-event-id") or 0)
        self.log.last_event_ids.append(after)
        self.log.authorizations.add(request.headers.get("authorization", ""))
        return StreamingResponse(self.messages(match[1], after), media_type="text/event-stream")

    def messages(self, job_id: str, after: int) -> Iterator[bytes]:
        sent, quiet_since = 0, time.monotonic()
        yield b": connected\r\n\r\n"
        while time.monotonic() - quiet_since < IDLE_DROP_S:
            with session_scope() as session:
                rows = repository.events(session, job_id, after=after, limit=self.log.cut_after)
                events = [EventOut.model_validate(e, from_attributes=True) for e in rows]
                job = session.get(Job, job_id)
                finished = job is not None and job.status in TERMINAL
            for event in events:
                message = (
                    f"id: {event.id}\r\nevent: {event.type}\r\n"
                    f"data: {event.model_dump_json()}\r\n\r\n"
                ).encode()
                half = message.index(b"\r\n") + 1  # between CR and LF
                yield message[:half]
                yield message[half:]
                after, sent, quiet_since = event.id, sent + 1, time.monotonic()
                if sent >= self.log.cut_after:
                    return  # dropped: the reader resumes with Last-Event-ID
            if finished and not events:
                yield b"event: end\r\ndata: {}\r\n\r\n"
                return
            yield b": ping\r\n\r\n"
            time.sleep(POLL_S)
