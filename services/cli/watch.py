"""Follow a job until it ends: its events from the live stream (or by polling where the API
has no stream), its phases as progress bars on a terminal, a line per change elsewhere."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from typing import Any

import httpx
from rich.console import Console

from orchestrator.lifecycle import TERMINAL_JOB, PhaseStatus
from services.cli.client import ApiError, Client, Disconnected, StreamUnavailable, Unreachable
from services.cli.progress import Board, PhaseProgress
from services.cli.render import phase_table, progress_line
from services.cli.waiting import unserved_phases

POLL_LIMIT = 200  # events per page when polling
# `relaytune up` restarts an API that died within seconds: a watch rides that out.
OUTAGE_SECONDS = 30.0


class EventFeed:
    """The job's events in order, each once. A thread reads the live stream and, when it
    breaks off, resumes it after the last event seen; without a stream, take() polls."""

    def __init__(self, client: Client, job_id: str):
        self.client, self.job_id = client, job_id
        self.last_id = 0
        self._seen: set[int] = set()
        self.streaming = False
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._response: httpx.Response | None = None

    def open(self) -> None:
        try:
            self._response = self.client.open_event_stream(self.job_id)
        except StreamUnavailable:
            return
        self.streaming = True
        threading.Thread(target=self._follow, name="relaytune-events", daemon=True).start()

    def _put(self, event: dict[str, Any]) -> None:
        # A stream sends an event written late below ids it already sent, and a resumed
        # stream or the final poll may repeat one: each id is taken once, in any order.
        event_id = int(event["id"])
        with self._lock:  # the stream's thread and a final poll may both deliver an event
            if event_id not in self._seen:
                self._seen.add(event_id)
                self.last_id = max(self.last_id, event_id)  # where a resumed stream starts
                self._events.put(event)

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    if self._response is None:
                        self._response = self.client.open_event_stream(self.job_id, self.last_id)
                    for event in self.client.read_event_stream(self._response):
                        self._put(event)
                except StreamUnavailable:
                    return  # take() polls from the last event seen
                except (Unreachable, Disconnected, ApiError):
                    pass  # the API restarts, a proxy cut the stream: resume in a moment
                except Exception:
                    if self._stop.is_set():
                        return  # close() closed the stream under this thread: any error may say so
                    raise
                finally:
                    self._response = None
                self._stop.wait(1.0)
        finally:
            self.streaming = False  # whatever ended the thread, take() polls from now on

    def take(self, final: bool = False) -> list[dict[str, Any]]:
        """The events that came since the last call. `final`, once the job has ended: stop
        streaming and read what the stream had not delivered yet, so the last loss shows."""
        if final:
            self.close()
        if final or not self.streaming:
            try:
                self._poll()
            except (Unreachable, Disconnected):
                if final:
                    raise
                # the job's next read waits out the outage; the events come next round
        taken = []
        with contextlib.suppress(queue.Empty):
            while True:
                taken.append(self._events.get_nowait())
        return taken

    def _poll(self) -> None:
        while True:
            page = self.client.events(self.job_id, after=self.last_id, limit=POLL_LIMIT)
            for event in page:
                self._put(event)
            if len(page) < POLL_LIMIT:
                return

    def close(self) -> None:
        self._stop.set()
        response = self._response
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()


def follow(client: Client, job_id: str, console: Console, interval: float = 1.0) -> dict[str, Any]:
    """Follow the job until it ends; returns it as it ended. Ctrl-C leaves it running."""
    job = client.job(job_id)
    feed = EventFeed(client, job_id)
    feed.open()
    try:
        if console.is_terminal:
            job = _bars(client, job, feed, console, interval)
        else:
            job = _lines(client, job, feed, console, interval)
    finally:
        feed.close()
    console.print(phase_table(job))  # attempts and durations: the summary `make demo` ends with
    return job


def _bars(
    client: Client, job: dict[str, Any], feed: EventFeed, console: Console, interval: float
) -> dict[str, Any]:
    board, warned = Board(), set[str]()
    with PhaseProgress(job["cost"]["currency"], console=console) as bars:
        while True:
            ended = job["status"] in TERMINAL_JOB
            for event in feed.take(final=ended):
                board.apply(event)
            bars.show(job, board.rows(job))
            if ended:
                return job
            _warn_unserved(client, job, warned, console)
            time.sleep(interval)
            job = _reread(client, job["id"])


def _lines(
    client: Client, job: dict[str, Any], feed: EventFeed, console: Console, interval: float
) -> dict[str, Any]:
    warned: set[str] = set()
    last: tuple[Any, ...] = ()
    while True:
        ended = job["status"] in TERMINAL_JOB
        feed.take(final=ended)  # keeps the feed's place; the lines show statuses and steps only
        # The cost meter moves every second; print only when a status or a step changes.
        signature = (job["status"], *((p["status"], p["progress"]["step"]) for p in job["phases"]))
        if signature != last:
            console.print(progress_line(job), soft_wrap=True, markup=False)
        last = signature
        if ended:
            return job
        _warn_unserved(client, job, warned, console)
        time.sleep(interval)
        job = _reread(client, job["id"])


def _reread(client: Client, job_id: str) -> dict[str, Any]:
    """The job now; while the API does not answer, retried for up to OUTAGE_SECONDS."""
    deadline = time.monotonic() + OUTAGE_SECONDS
    while True:
        try:
            return client.job(job_id)
        except (Unreachable, Disconnected):
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _warn_unserved(client: Client, job: dict[str, Any], warned: set[str], console: Console) -> None:
    """Warn once each time a queued phase starts waiting on a pool with no live worker."""
    pools = None
    # On an error the phases' own status_detail still tells.
    with contextlib.suppress(ApiError):
        if any(p["status"] == PhaseStatus.QUEUED for p in job["phases"]):
            pools = client.pools()
    warnings = unserved_phases(job, pools)
    for name in warnings.keys() - warned:
        console.print(
            f"warning: {warnings[name]}",
            style="yellow",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    warned.clear()
    warned.update(warnings)
