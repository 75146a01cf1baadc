"""The API on loopback for the API benches: uvicorn in its own process against PostgreSQL, Redis
and S3 found or started as the test launcher does (tests/backing), each bench with a database,
a Redis database and a bucket of its own that are gone afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import ROOT


@contextlib.contextmanager
def private_database(base_url: str) -> Iterator[str]:
    """A fresh database beside base_url's, migrated to head, dropped at the end."""
    from sqlalchemy import create_engine, make_url, text

    from orchestrator.migrate import upgrade_head

    url = make_url(base_url)
    name = f"relaytune_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        mine = url.set(database=name).render_as_string(hide_password=False)
        upgrade_head(mine)
        yield mine
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def service_env() -> Iterator[dict[str, str]]:
    """RELAYTUNE_* settings for the API and this process, set in os.environ while it runs."""
    import redis

    from orchestrator.storage import get_store
    from tests.backing.runner import provide_services
    from tests.conftest import reset_caches
    from tests.redis_databases import RedisDatabaseClaim

    with (
        provide_services() as urls,
        private_database(urls.database_url) as database_url,
        RedisDatabaseClaim(urls.redis_url) as broker_url,
    ):
        env = {
            "RELAYTUNE_DATABASE_URL": database_url,
            "RELAYTUNE_BROKER_URL": broker_url,
            "RELAYTUNE_S3_ENDPOINT": urls.s3_endpoint,
            "RELAYTUNE_S3_BUCKET": f"relaytune-bench-{uuid.uuid4().hex[:8]}",
            "RELAYTUNE_S3_ACCESS_KEY": os.environ.get("RELAYTUNE_TEST_S3_ACCESS_KEY", "testing"),
            "RELAYTUNE_S3_SECRET_KEY": os.environ.get("RELAYTUNE_TEST_S3_SECRET_KEY", "testing"),
            "RELAYTUNE_REAPER_INTERVAL_SECONDS": "0",
            "RELAYTUNE_SWEEP_INTERVAL_SECONDS": "0",
        }
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        reset_caches()
        try:
            yield env
        finally:
            store = get_store()
            for key in store.list(""):
                store.delete(key)
            # The jobs submitted here queued messages no worker will take.
            redis.Redis.from_url(broker_url).flushdb()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            reset_caches()


@dataclass
class Api:
    url: str
    process: subprocess.Popen[bytes]
    key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@contextlib.contextmanager
def running_api(
    env: dict[str, str], extra_env: dict[str, str] | None = None, log: Path | None = None
) -> Iterator[Api]:
    """uvicorn serving the API on a free loopback port, one process, one worker; a key for
    tenant `bench`."""
    from orchestrator.auth import create_api_key
    from orchestrator.db import session_scope
    from services.cli.standalone import free_port, wait_ready

    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "services.api.main:create_app", "--factory"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    out: Any = log.open("wb") if log else subprocess.DEVNULL
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env={**os.environ, **env, **(extra_env or {}), "PYTHONPATH": str(ROOT)},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=120, alive=lambda: process.poll() is None)
        with session_scope() as session:
            key = create_api_key(session, "bench")
        yield Api(url, process, key)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if log:
            out.close()
