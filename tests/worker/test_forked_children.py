"""A worker's children never share the parent's database connections.

The worker's parent uses the job store before its pool forks (to find its queue, to drop stale
deliveries); a child that kept the copied connection would interleave its queries with the
parent's on one server session (seen as psycopg's DuplicatePreparedStatement)."""

from __future__ import annotations

import os
import threading

from sqlalchemy import text

from orchestrator.db import get_engine, session_scope
from worker import child_warmup
from worker.celery_app import _own_database_connections


def _backend_pid() -> int:
    with session_scope() as session:
        return int(session.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_forked_child_opens_its_own_connection(service_env: dict[str, str]) -> None:
    get_engine().dispose()
    parent = _backend_pid()  # leaves a pooled connection behind, as the worker's parent does
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            _own_database_connections()
            os.write(write, str(_backend_pid()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    seen = os.read(read, 64).decode()
    os.close(read)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(seen) != parent
    assert _backend_pid() == parent  # the parent's own connection was left alone


def test_a_fresh_child_connects_before_its_phase_arrives(service_env: dict[str, str]) -> None:
    get_engine().dispose()
    _backend_pid()  # the parent's pooled connection, as above
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            _own_database_connections()  # starts the thread that connects ahead
            for thread in threading.enumerate():
                if thread.name == child_warmup.THREAD_NAME:
                    thread.join(timeout=60)
            waiting = get_engine().pool.checkedin()  # type: ignore[attr-defined]
            os.write(write, str(waiting).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    seen = os.read(read, 64).decode()
    os.close(read)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert int(seen) == 1  # an open connection of its own waits in the pool for the claim
