"""Forked children (a worker's child per phase) never share the parent's connections."""

from __future__ import annotations

import os

from sqlalchemy import text

from orchestrator import db


def _child_queries() -> int:
    """Fork; the child queries often enough for psycopg to prepare statements. Exit status."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            db.forget_inherited_connections()
            for i in range(8):
                with db.session_scope() as session:
                    session.execute(text("SELECT :x + 1"), {"x": i})
        except Exception:
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_children_forked_one_after_another_each_get_their_own_connections(
    service_env: dict[str, str],
) -> None:
    with db.session_scope() as session:  # the parent holds a pooled connection, as a worker does
        session.execute(text("SELECT 1"))
    assert [_child_queries() for _ in range(2)] == [0, 0]
