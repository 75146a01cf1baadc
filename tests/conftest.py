"""Real services for every test: PostgreSQL (schema from `alembic upgrade head`), Redis, S3.

`make test` starts whichever of them is not reachable and exports their URLs; run bare, pytest
falls back to the local defaults below.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, make_url, text

from orchestrator import db, dispatch, read_cache, storage
from orchestrator.migrate import upgrade_head
from orchestrator.settings import TINY_MODEL_NAME, get_settings

DATABASE_URL = os.environ.get(
    "RELAYTUNE_TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/relaytune_test"
)
REDIS_URL = os.environ.get("RELAYTUNE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
S3_ENDPOINT = os.environ.get("RELAYTUNE_TEST_S3_ENDPOINT", "")

DATA_TABLES = (
    "phase_timings",
    "checkpoints",
    "events",
    "phases",
    "jobs",
    "datasets",
    "api_keys",
    "tenants",
    "workers",
    "idempotency_keys",
    "models",
)


def reset_caches() -> None:
    for cached in (get_settings, db.get_engine, db.get_sessionmaker, storage.get_store):
        cached.cache_clear()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    if S3_ENDPOINT:
        yield S3_ENDPOINT
        return
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _private_database(base_url: str) -> tuple[str, Callable[[], None]]:
    """A database of this test session's own, so concurrent runs never share a schema."""
    url = make_url(base_url)
    name = f"{url.database}_{os.getpid()}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return url.set(database=name).render_as_string(hide_password=False), drop


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database whose schema comes the only way schemas come: alembic upgrade head."""
    url, drop = _private_database(DATABASE_URL)
    upgrade_head(url)
    yield url
    drop()  # WITH (FORCE) closes what the session's engines still hold


# Base models the suite's jobs name besides the model root's: stand-ins for models with no
# catalog shape ("tiny", "m") and a path named by its shape, as an operator would allow them.
ALLOWED_TEST_MODELS = ("tiny", "m", "/models/Qwen3-VL-8B-Instruct")


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's model root, with the default tiny model written into it as `relaytune up`
    and `relaytune make-tiny-model` write it: workers never write it themselves, so every
    test that starts one needs it here first."""
    from worker.tiny_model import write_tiny_model

    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root / TINY_MODEL_NAME, seed=0)
    return root


@pytest.fixture(scope="session")
def service_env(
    database_url: str, s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory, model_root: Path
) -> Iterator[dict[str, str]]:
    """Environment that points every relaytune process (this one and its children) at the
    test services."""
    data_dir = tmp_path_factory.mktemp("relaytune-data")
    env = {
        "RELAYTUNE_DATABASE_URL": database_url,
        "RELAYTUNE_BROKER_URL": REDIS_URL,
        "RELAYTUNE_S3_ENDPOINT": s3_endpoint,
        "RELAYTUNE_S3_BUCKET": "relaytune-test",
        "RELAYTUNE_S3_ACCESS_KEY": "testing",
        "RELAYTUNE_S3_SECRET_KEY": "testing",
        "RELAYTUNE_DATA_DIR": str(data_dir),
        "RELAYTUNE_REAPER_INTERVAL_SECONDS": "0",
        "RELAYTUNE_WEBHOOK_INTERVAL_SECONDS": "0",
        "RELAYTUNE_MODEL_ROOT": str(model_root),
        "RELAYTUNE_ALLOWED_MODELS": ",".join(ALLOWED_TEST_MODELS),
        # The webhook tests' receivers listen on 127.0.0.1, which webhooks may not reach by
        # default; the tests of that refusal unset this.
        "RELAYTUNE_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    reset_caches()
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_caches()


_seeded_pools: list[dict[str, Any]] = []


def _reset_pools(conn: Connection) -> None:
    """Pools as the migrations seed them: a test that adds or reprices one leaves no trace."""
    if not _seeded_pools:
        rows = conn.execute(text("SELECT * FROM pools"))
        _seeded_pools.extend(dict(row._mapping) for row in rows)
    conn.execute(
        text("DELETE FROM pools WHERE NOT (name = ANY(:names))"),
        {"names": [p["name"] for p in _seeded_pools]},
    )
    for pool in _seeded_pools:
        columns = ", ".join(f"{c} = :{c}" for c in pool if c != "name")
        conn.execute(text(f"UPDATE pools SET {columns} WHERE name = :name"), pool)


@pytest.fixture
def clean_db(service_env: dict[str, str]) -> Iterator[None]:
    """Empty job store and bucket, and the seeded pools, before the test."""
    engine = db.get_engine()
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
        _reset_pools(conn)
    read_cache.clear_all()  # copies of the previous test's pools and workers
    store = storage.get_store()
    for key in store.list(""):
        store.delete(key)
    yield


@pytest.fixture
def recorded_dispatch() -> Iterator[dispatch.RecordingDispatcher]:
    recorder = dispatch.RecordingDispatcher()
    dispatch.set_dispatcher(recorder)
    yield recorder
    dispatch.set_dispatcher(None)


@pytest.fixture(scope="session")
def example_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "examples" / "circuit-boards"


@pytest.fixture(scope="session")
def tiny_model_dir(model_root: Path) -> str:
    """The tiny random Qwen3-VL (nothing is downloaded) that model_root holds, at the default
    base model's place: a job naming this directory names the default model."""
    return str(model_root / TINY_MODEL_NAME)


@pytest.fixture(scope="session")
def private_redis_url(service_env: dict[str, str]) -> Iterator[str]:
    """A Redis database that this test run has claimed for itself until it ends, so two runs
    on one machine (a developer's and CI's) never consume each other's messages."""
    import redis

    from tests.redis_databases import RedisDatabaseClaim

    with RedisDatabaseClaim(service_env["RELAYTUNE_BROKER_URL"]) as url:
        yield url
        redis.Redis.from_url(url).flushdb()  # the next run to claim it starts from nothing


@pytest.fixture
def private_broker_url(private_redis_url: str) -> str:
    """This run's own Redis database, emptied for one test's Celery traffic."""
    import redis

    redis.Redis.from_url(private_redis_url).flushdb()
    return private_redis_url
