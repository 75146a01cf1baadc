"""A job read costs a fixed, small number of SQL statements, whatever the job holds: no query
per phase, per run or per job of a page (an N+1) and no query for the pools or the workers'
liveness on every read (see orchestrator.read_cache)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import event

from orchestrator import db
from tests.factories import new_api_key
from tests.orchestrator.relay_helpers import claim, complete, expire_lease, run_reaper

# The key with its tenant, then the job with its phases, then its runs' timings.
READ_JOB = 3
# The key with its tenant, the total, the page, its phases, its timings.
LIST_JOBS = 5
# What submitting costs today (checks, the plan, estimates, the rows, the events); pinned so
# that it only comes down.
POST_JOB = 28


@contextmanager
def counted() -> Iterator[list[str]]:
    statements: list[str] = []

    def note(*args: Any) -> None:
        statements.append(args[2])

    engine = db.get_sessionmaker().kw["bind"]  # the sessions' engine (get_engine() is another)
    event.listen(engine, "before_cursor_execute", note)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", note)


def statements_of(request: Callable[[], httpx.Response]) -> int:
    with counted() as statements:
        response = request()
    assert response.status_code < 300, response.text
    return len(statements)


def _submit(client: TestClient, dataset_id: str) -> str:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _give_history(job_id: str) -> None:
    """Phases that ran, a run lost and re-queued: more phases' timings and events to show."""
    complete(claim(job_id, "preprocess"))
    claim(job_id, "warmup")
    expire_lease(job_id, "warmup", heartbeat_ago=5)
    run_reaper()
    complete(claim(job_id, "warmup", attempt=2))
    claim(job_id, "final")


def test_a_job_read_runs_a_fixed_number_of_statements_however_much_the_job_holds(
    client: TestClient, dataset_id: str
) -> None:
    job_id = _submit(client, dataset_id)
    client.get(f"/v1/jobs/{job_id}")  # the pools' and workers' copies are loaded once
    fresh = statements_of(lambda: client.get(f"/v1/jobs/{job_id}"))
    _give_history(job_id)
    client.get(f"/v1/jobs/{job_id}")
    body = client.get(f"/v1/jobs/{job_id}").json()
    assert [(p["timing"] or {}).get("runs") for p in body["phases"]] == [1, 2, None]
    assert fresh == statements_of(lambda: client.get(f"/v1/jobs/{job_id}")) <= READ_JOB


def test_a_page_of_jobs_runs_a_fixed_number_of_statements_however_many_jobs_it_holds(
    client: TestClient, dataset_id: str
) -> None:
    _submit(client, dataset_id)
    client.get("/v1/jobs")
    one = statements_of(lambda: client.get("/v1/jobs"))
    for _ in range(4):
        _give_history(_submit(client, dataset_id))
    assert len(client.get("/v1/jobs").json()["data"]) == 5
    assert one == statements_of(lambda: client.get("/v1/jobs")) <= LIST_JOBS


def test_submitting_a_job_runs_no_more_statements_than_it_did(
    client: TestClient, dataset_id: str
) -> None:
    _submit(client, dataset_id)
    body = {"dataset_id": dataset_id}
    assert statements_of(lambda: client.post("/v1/jobs", json=body)) <= POST_JOB


def test_a_job_read_shows_a_pool_changed_through_the_api_at_once(
    client: TestClient, dataset_id: str
) -> None:
    job_id = _submit(client, dataset_id)
    assert client.get(f"/v1/jobs/{job_id}").json()["phases"][0]["gpu_model"] != "T4 (renamed)"
    admin = {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}
    response = client.put("/v1/pools/t4", json={"gpu_model": "T4 (renamed)"}, headers=admin)
    assert response.status_code == 200, response.text
    assert client.get(f"/v1/jobs/{job_id}").json()["phases"][0]["gpu_model"] == "T4 (renamed)"
