"""Short-lived in-process copies of small tables that every job read shows.

The pools table and the workers seen lately change rarely (an operator repricing a pool, a
reaper round every few seconds) while every `GET /v1/jobs/{id}` shows them; asking the database
for them on every read was a third of a read's statements. A copy a few seconds old is harmless
there: a read shows a running phase's meter, but what a run costs is billed at its end from the
pools table itself (orchestrator.cost), never from this copy; and `waiting_for_worker` needs a
pool unserved for SEEN_WITHIN (two minutes), far longer than a copy lives. A change made in this
process (a pool repriced, workers recorded) drops the copies at once.

Never used for API keys: a revoked or expired key is refused on its next request.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session

T = TypeVar("T")

# Long enough to spare the database under load, short enough that nobody notices.
TTL_SECONDS = 3.0


class TtlCache(Generic[T]):
    """One value per database, reloaded when older than `seconds`. Two threads that find it
    stale at once may both load it: harmless, and no lock is held across a query."""

    def __init__(self, seconds: float = TTL_SECONDS) -> None:
        self.seconds = seconds
        self._values: dict[str, tuple[float, T]] = {}
        self._lock = threading.Lock()

    def get(self, session: Session, load: Callable[[], T]) -> T:
        # Keyed by the database, so that processes (and tests) that switch databases never see
        # another database's rows.
        where = str(session.get_bind().engine.url)
        now = time.monotonic()
        with self._lock:
            found = self._values.get(where)
        if found is not None and now - found[0] < self.seconds:
            return found[1]
        value = load()
        with self._lock:
            self._values[where] = (now, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()


_caches: list[TtlCache[object]] = []


def new_cache(seconds: float = TTL_SECONDS) -> TtlCache[T]:
    cache: TtlCache[T] = TtlCache(seconds)
    _caches.append(cache)  # type: ignore[arg-type]
    return cache


def clear_all() -> None:
    """Drop every copy: after a change made in this process, or between tests."""
    for cache in _caches:
        cache.clear()


def clear_after_commit(session: Session) -> None:
    """Drop the copies now and again once `session` commits: a read that reloads them in
    between would still see the rows as they were before this change."""
    clear_all()
    event.listen(session, "after_commit", lambda _session: clear_all(), once=True)
