"""A running phase rides out a short outage of the job store or the broker: a real worker
process reaches PostgreSQL or Redis through a proxy that the test cuts for a few seconds
while the warmup trains. The job succeeds, each phase runs and is billed once."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from orchestrator import dispatch
from orchestrator.db import session_scope
from orchestrator.models import Event, Phase, PhaseTiming
from services.api.main import create_app
from tests.factories import new_api_key, zip_folder
from tests.faults.tcp_proxy import TcpProxy
from tests.test_end_to_end import _wait_for_job

POOL = "a10"
# Every phase on one pool: one worker process runs the whole relay (same-pool fusion), which
# keeps the test short. One optimizer step per sample gives the warmup steps to cut into;
# the final phase only evaluates and exports.
PHASES_ON_ONE_POOL = {"preprocess": POOL, "warmup": POOL, "final": POOL}
HP = {
    "warmup_epochs": 1,
    "total_epochs": 1,
    "batch_size": 1,
    "gradient_accumulation": 1,
    "validation_samples": 1,
    "eval_max_new_tokens": 4,
    "augmentation": {"enabled": False},
}
OUTAGE_SECONDS = 4.0


@dataclass
class Proxies:
    database: TcpProxy
    broker: TcpProxy
    logs: Path


def _module_broker_url(service_env: dict[str, str]) -> str:
    """An empty Redis database of this test run's own (as the private_broker_url fixture
    chooses it), for a worker that serves every test of the module."""
    import redis

    url = service_env["RELAYTUNE_BROKER_URL"].rsplit("/", 1)[0] + f"/{1 + os.getpid() % 14}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def worker_behind_proxies(
    service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxies]:
    """One worker process that reaches PostgreSQL and Redis through proxies a test can cut;
    this process (the API, the test's own reads, the dispatcher) reaches both directly."""
    broker_url = _module_broker_url(service_env)
    database = TcpProxy.for_url(service_env["RELAYTUNE_DATABASE_URL"]).start()
    broker = TcpProxy.for_url(broker_url).start()
    logs = tmp_path_factory.mktemp("outage-worker")
    env = {
        **os.environ,
        **service_env,
        "RELAYTUNE_HEARTBEAT_SECONDS": "1",
        "RELAYTUNE_DATABASE_URL": database.url_for(service_env["RELAYTUNE_DATABASE_URL"]),
        "RELAYTUNE_BROKER_URL": broker.url_for(broker_url),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.cli.main", "worker", "--pool", POOL],
        env=env,
        stdout=(logs / "worker.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    dispatch.set_dispatcher(dispatch.CeleryDispatcher(broker_url))
    yield Proxies(database, broker, logs)
    dispatch.set_dispatcher(None)
    worker.terminate()
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
    database.close()
    broker.close()


def _warmup(job_id: str) -> Phase:
    with session_scope() as session:
        return session.scalars(
            select(Phase).where(Phase.job_id == job_id, Phase.name == "warmup")
        ).one()


def _wait_for_warmup_steps(job_id: str, logs: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        warmup = _warmup(job_id)
        if warmup.status == "running" and (warmup.step or 0) >= 1:
            return
        if warmup.status not in ("pending", "queued", "running"):
            pytest.skip(
                f"the warmup was {warmup.status} before the test could cut into it "
                "(a machine this fast needs a longer warmup)"
            )
        time.sleep(0.2)
    raise AssertionError(f"the warmup did not start training: {logs.read_text()[-3000:]}")


def _run_with_outage(
    proxy: TcpProxy, tiny_model_dir: str, example_dir: Path, logs: Path
) -> tuple[dict[str, Any], int, int]:
    """Submit a job, cut the proxy for a few seconds once the warmup is training; returns the
    finished job, how many connections the cut closed and how many it refused."""
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {new_api_key()}"
        upload = client.post("/v1/datasets", files={"file": ("ex.zip", zip_folder(example_dir))})
        assert upload.status_code == 201, upload.text
        submitted = client.post(
            "/v1/jobs",
            json={
                "dataset_id": upload.json()["id"],
                "base_model": tiny_model_dir,
                "hyperparameters": HP,
                "pools": PHASES_ON_ONE_POOL,
            },
        )
        assert submitted.status_code == 201, submitted.text
        job_id = submitted.json()["id"]
        _wait_for_warmup_steps(job_id, logs / "worker.log")
        refused_before = proxy.refused
        with proxy.outage() as closed:
            time.sleep(OUTAGE_SECONDS)
        refused = proxy.refused - refused_before
        job = _wait_for_job(client, job_id, logs)
    assert job["status"] == "succeeded", (job, (logs / "worker.log").read_text()[-4000:])
    return job, closed, refused


def _assert_each_phase_ran_and_was_billed_once(job: dict[str, Any]) -> None:
    assert [(p["name"], p["status"], p["attempt"]) for p in job["phases"]] == [
        ("preprocess", "succeeded", 1),
        ("warmup", "succeeded", 1),
        ("final", "succeeded", 1),
    ]
    with session_scope() as session:
        started = session.scalars(
            select(Event.phase).where(Event.job_id == job["id"], Event.type == "phase_started")
        ).all()
        billed = session.scalars(
            select(PhaseTiming.phase).where(PhaseTiming.job_id == job["id"])
        ).all()
    assert sorted(started) == sorted(billed) == ["final", "preprocess", "warmup"]


@pytest.mark.e2e
def test_a_phase_completes_through_a_database_outage(
    clean_db: None,
    worker_behind_proxies: Proxies,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    proxies = worker_behind_proxies
    job, _, refused = _run_with_outage(proxies.database, tiny_model_dir, example_dir, proxies.logs)
    assert refused > 0  # the worker did try the store while it was away
    _assert_each_phase_ran_and_was_billed_once(job)
    # Progress held back during the outage was written once the store was back.
    warmup = next(p for p in job["phases"] if p["name"] == "warmup")
    with session_scope() as session:
        succeeded = session.scalars(
            select(Event).where(
                Event.job_id == job["id"], Event.phase == "warmup", Event.type == "phase_succeeded"
            )
        ).one()
    assert warmup["progress"]["step"] == succeeded.data["global_step"]


@pytest.mark.e2e
def test_a_running_phase_is_not_terminated_when_the_broker_connection_drops(
    clean_db: None,
    worker_behind_proxies: Proxies,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    proxies = worker_behind_proxies
    job, closed, _ = _run_with_outage(proxies.broker, tiny_model_dir, example_dir, proxies.logs)
    assert closed >= 1  # the worker's broker connection was among those cut
    _assert_each_phase_ran_and_was_billed_once(job)
