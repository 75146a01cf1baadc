"""Engine and session factory. Alembic creates the schema; nothing here calls create_all."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.pool import NullPool

from orchestrator.settings import get_settings


class Base(DeclarativeBase):
    pass


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Several processes share the standalone database: WAL lets readers proceed while one writes,
    # and busy_timeout makes a writer wait instead of failing with "database is locked".
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


# A database that went silent (a partition, a dead host) must fail a call within seconds, so a
# run's retries stay inside its lease instead of hanging until TCP gives up (minutes).
_POSTGRES_TIMEOUTS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


# Every engine this process made, so a forked child can drop the connections it inherited.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def make_engine(url: str, *, pooled: bool = True) -> Engine:
    """`pooled=False` keeps no connection open between uses: for a process that forks."""
    pool: dict[str, Any] = {} if pooled else {"poolclass": NullPool}
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    elif url.startswith("postgresql"):
        engine = create_engine(url, pool_pre_ping=pooled, connect_args=_POSTGRES_TIMEOUTS, **pool)
    else:
        engine = create_engine(url, pool_pre_ping=pooled, **pool)
    _engines.add(engine)
    return engine


@lru_cache
def get_engine(url: str | None = None) -> Engine:
    return make_engine(url or get_settings().database_url)


def forget_inherited_connections() -> None:
    """Call first thing in a forked child: pooled connections copied from the parent are
    dropped (not closed: the parent still uses them), so the two processes never share a
    database connection, which would cross their queries and prepared statements."""
    for engine in list(_engines):
        engine.dispose(close=False)


def close_connections() -> None:
    """Close every pooled connection of this process (e.g. before it forks workers)."""
    for engine in list(_engines):
        engine.dispose()


@lru_cache
def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    session = (factory or get_sessionmaker())()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
