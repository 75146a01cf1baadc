"""The API under load on loopback: latency percentiles and throughput per endpoint and number of
concurrent clients, and where the service's own time per request goes.

uvicorn serves the API (one process, as `relaytune up` and the compose file run it) against
PostgreSQL, Redis and S3 (see bench/stack.py). The tenant holds JOBS jobs (submitted through
the API first). Each cell runs `clients` asyncio httpx clients in one loop, each sending its next
request as soon as the last one answered, for a fixed time:

    get_job    GET /v1/jobs/{id}
    list_jobs  GET /v1/jobs (the first page, 20 jobs)
    post_job   POST /v1/jobs (a new job on the same data set; its first phase is queued)

plus an open-loop cell that starts GET /v1/jobs/{id} at a fixed rate (the goal's 500/s) whatever
the answers' pace, so a slow server shows as latency instead of as fewer requests.
Latencies are measured by the client (send to last byte). The service's own work is measured in
this process afterwards: the same requests through the ASGI app without a socket, with
SQLAlchemy's cursor events timing every statement and the main functions of a request timed. Usage:
    python -m bench.api_load [--seconds 10] [--clients 1 10 50] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

from bench.machine import write_result
from bench.stack import Api, running_api, service_env

JOBS = 40
TARGET_RATE = 500.0
TARGET_P99_MS = 20.0


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def cell_figures(latencies: list[float], errors: int, seconds: float) -> dict[str, Any]:
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(ms),
        "errors": errors,
        "throughput_per_s": len(ms) / seconds,
        "p50_ms": statistics.median(ms) if ms else None,
        "p99_ms": percentile(ms, 0.99) if ms else None,
        "max_ms": max(ms) if ms else None,
    }


def requests_for(
    api: Api, dataset_id: str, job_id: str
) -> dict[str, Callable[[httpx.AsyncClient], Any]]:
    body = {"dataset_id": dataset_id, "hyperparameters": {"total_epochs": 2, "warmup_epochs": 1}}
    return {
        "get_job": lambda c: c.get(f"/v1/jobs/{job_id}"),
        "list_jobs": lambda c: c.get("/v1/jobs"),
        "post_job": lambda c: c.post("/v1/jobs", json=body),
    }


def _cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def database_processes() -> list[Any]:
    """The local PostgreSQL server's processes (its backends do the queries' work)."""
    import psutil

    found = []
    for process in psutil.process_iter(["name"]):
        if process.info["name"] in ("postgres", "postmaster"):
            found.append(process)
    return found


@contextmanager
def cpu_per_request(api: Api, cell: dict[str, Any]) -> Iterator[None]:
    """CPU milliseconds per answered request, in the API process, in the database server and
    in this (client) process, over the cell: what a request costs whatever the wall clock
    says, and so how many per second one core could serve. A database backend that ended
    during the cell takes its CPU with it (a slight undercount); one that started counts
    from zero."""
    import psutil

    def snapshot(processes: list[Any]) -> dict[int, float]:
        seconds = {}
        for process in processes:
            with suppress(psutil.Error):  # a backend that ended meanwhile
                seconds[process.pid] = _cpu_seconds(process)
        return seconds

    def parts() -> dict[str, list[Any]]:
        return {
            "api": [psutil.Process(api.process.pid)],
            "database": database_processes(),
            "client": [psutil.Process()],
        }

    before = {name: snapshot(processes) for name, processes in parts().items()}
    yield
    after = {name: snapshot(processes) for name, processes in parts().items()}
    requests = max(cell.get("requests", 0), 1)
    cell["cpu_ms_per_request"] = {
        name: sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after[name].items())
        / requests
        * 1000
        for name in after
    }


async def closed_loop(
    api: Api, send: Callable[[httpx.AsyncClient], Any], clients: int, seconds: float
) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=api.url, headers=api.headers, limits=limits, timeout=30
    ) as client:
        await send(client)  # a connection and the server's caches warm before the clock starts
        deadline = time.perf_counter() + seconds

        async def one_client() -> None:
            nonlocal errors
            while (started := time.perf_counter()) < deadline:
                response = await send(client)
                latencies.append(time.perf_counter() - started)
                errors += response.status_code >= 400

        started = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"clients": clients, **cell_figures(latencies, errors, elapsed)}


async def open_loop(
    api: Api, send: Callable[[httpx.AsyncClient], Any], rate: float, seconds: float
) -> dict[str, Any]:
    """Requests started every 1/rate s; latency counts from the planned start, so time spent
    waiting for a free connection or a busy event loop counts too. Requests still unanswered
    `seconds` after the last one started are cancelled and counted as `unfinished`."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(
        base_url=api.url, headers=api.headers, limits=limits, timeout=max(seconds, 5.0)
    ) as client:
        await send(client)

        async def one(planned: float) -> None:
            nonlocal errors
            try:
                response = await send(client)
            except httpx.HTTPError:  # a timeout, or no free connection in time
                errors += 1
                return
            latencies.append(time.perf_counter() - planned)
            errors += response.status_code >= 400

        tasks = []
        start = time.perf_counter()
        planned_count = int(rate * seconds)
        for index in range(planned_count):
            planned = start + index / rate
            if time.perf_counter() - start > seconds:
                break  # a client that cannot keep the pace stops at the cell's end
            await asyncio.sleep(max(0.0, planned - time.perf_counter()))
            tasks.append(asyncio.create_task(one(planned)))
        _, pending = await asyncio.wait(tasks, timeout=seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.perf_counter() - start
    figures = cell_figures(latencies, errors, elapsed)
    return {
        "target_rate_per_s": rate,
        "sent": len(tasks),
        "not_sent": planned_count - len(tasks),
        "unfinished": len(pending),
        **figures,
    }


def prepare(api: Api) -> tuple[str, str]:
    from tests.factories import dataset_zip

    with httpx.Client(base_url=api.url, headers=api.headers, timeout=60) as http:
        files = {"file": ("bench.zip", dataset_zip(), "application/zip")}
        dataset_id = http.post("/v1/datasets", files=files).raise_for_status().json()["id"]
        body = {
            "dataset_id": dataset_id,
            "hyperparameters": {"total_epochs": 2, "warmup_epochs": 1},
        }
        job_ids = [
            http.post("/v1/jobs", json=body).raise_for_status().json()["id"] for _ in range(JOBS)
        ]
    return dataset_id, job_ids[0]


# --- where the service's time goes ------------------------------------------------------------


@contextmanager
def sql_clock() -> Iterator[list[float]]:
    """Seconds of every SQL statement the engine runs while the block runs."""
    from sqlalchemy import event

    from orchestrator.db import get_sessionmaker

    # The sessions' engine: get_engine() and get_engine(None) are two cache entries.
    engine = get_sessionmaker().kw["bind"]
    spent: list[float] = []

    def before(
        conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any
    ) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after(conn: Any, cursor: Any, statement: Any, params: Any, context: Any, many: Any) -> None:
        spent.append(time.perf_counter() - conn.info["bench_started"].pop())

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield spent
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


# Functions whose time (including what they call) says where a request's time goes.
TIMED = {
    "authenticate_key (API key lookup)": ("orchestrator.auth", "authenticate_key"),
    "job_for_tenant (the job query)": ("orchestrator.repository", "job_for_tenant"),
    "list_jobs (the page query)": ("orchestrator.repository", "list_jobs"),
    "pools_by_name": ("orchestrator.repository", "pools_by_name"),
    "served_queues (worker liveness)": ("orchestrator.liveness", "served_queues"),
    # Reads take both from copies a few seconds old (orchestrator.read_cache).
    "pools_to_show (pools, cached)": ("orchestrator.repository", "pools_to_show"),
    "served_queues_to_show (liveness, cached)": (
        "orchestrator.liveness",
        "served_queues_to_show",
    ),
    "job_out (building the answer)": ("services.api.presenters", "job_out"),
    "submit_job": ("orchestrator.jobs", "submit_job"),
}


@contextmanager
def function_clock() -> Iterator[dict[str, list[float]]]:
    """Seconds of every call of the TIMED functions, from whatever thread calls them (sync
    routes run in a thread pool, out of a profiler's sight): each is swapped for a timing
    wrapper in every loaded relaytune module that holds it, and put back afterwards."""
    import functools
    import importlib
    import sys

    spent: dict[str, list[float]] = {label: [] for label in TIMED}
    swapped: list[tuple[Any, str, Any]] = []
    for label, (module_name, name) in TIMED.items():
        original = getattr(importlib.import_module(module_name), name)

        def timed(
            *args: Any, _f: Any = original, _into: list[float] = spent[label], **kwargs: Any
        ) -> Any:
            started = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                _into.append(time.perf_counter() - started)

        wrapper = functools.wraps(original)(timed)
        for module in list(sys.modules.values()):
            if getattr(module, "__name__", "").startswith(("orchestrator", "services")) and (
                getattr(module, name, None) is original
            ):
                swapped.append((module, name, original))
                setattr(module, name, wrapper)
    try:
        yield spent
    finally:
        for module, name, original in swapped:
            setattr(module, name, original)


def service_time(api: Api, dataset_id: str, job_id: str, count: int) -> dict[str, Any]:
    """Per request: wall time through the ASGI app in this process (no socket), SQL statements
    and their time, and the time inside each TIMED function."""
    from fastapi.testclient import TestClient

    from services.api.main import create_app

    body = {"dataset_id": dataset_id, "hyperparameters": {"total_epochs": 2, "warmup_epochs": 1}}
    calls: dict[str, Callable[[TestClient], Any]] = {
        "get_job": lambda c: c.get(f"/v1/jobs/{job_id}"),
        "list_jobs": lambda c: c.get("/v1/jobs"),
        "post_job": lambda c: c.post("/v1/jobs", json=body),
    }
    found: dict[str, Any] = {}
    with TestClient(create_app()) as client:
        client.headers.update(api.headers)
        for name, call in calls.items():
            call(client).raise_for_status()  # warm
            with sql_clock() as statements, function_clock() as functions:
                started = time.perf_counter()
                for _ in range(count):
                    call(client).raise_for_status()
                elapsed = time.perf_counter() - started
            found[name] = {
                "requests": count,
                "ms_per_request": elapsed / count * 1000,
                "sql_statements_per_request": len(statements) / count,
                "sql_ms_per_request": sum(statements) / count * 1000,
                "ms_per_request_in": {
                    label: sum(times) / count * 1000 for label, times in functions.items() if times
                },
            }
    return found


def run(
    quick: bool = False, seconds: float = 10.0, clients: tuple[int, ...] = (1, 10, 50)
) -> dict[str, Any]:
    if quick:
        seconds, clients = 1.0, (1, 4)
    cells: list[dict[str, Any]] = []
    with service_env() as env, running_api(env) as api:
        dataset_id, job_id = prepare(api)
        sends = requests_for(api, dataset_id, job_id)
        for name, send in sends.items():
            for count in clients:
                cell: dict[str, Any] = {"endpoint": name}
                with cpu_per_request(api, cell):
                    cell |= asyncio.run(closed_loop(api, send, count, seconds))
                cells.append(cell)
                cpu = cell["cpu_ms_per_request"]
                print(
                    f"  api_load {name:9} {count:2} clients: {cell['throughput_per_s']:.0f}/s, "
                    f"p50 {cell['p50_ms']:.1f} ms, p99 {cell['p99_ms']:.1f} ms; CPU ms per "
                    f"request: API {cpu['api']:.1f}, database {cpu['database']:.1f}, "
                    f"client {cpu['client']:.1f}",
                    flush=True,
                )
        rate = 50.0 if quick else TARGET_RATE
        paced = {
            "endpoint": "get_job",
            **asyncio.run(open_loop(api, sends["get_job"], rate, seconds)),
        }
        print(
            f"  api_load get_job at {rate:.0f}/s: {paced['throughput_per_s']:.0f}/s, "
            f"p50 {paced['p50_ms']:.1f} ms, p99 {paced['p99_ms']:.1f} ms",
            flush=True,
        )
        work = service_time(api, dataset_id, job_id, 20 if quick else 200)
    return {
        "what": "API latency and throughput on loopback, and where a request's time goes",
        "settings": {
            "seconds_per_cell": seconds,
            "clients": list(clients),
            "jobs_of_tenant": JOBS,
            "server": "uvicorn, 1 process",
            "client": "httpx.AsyncClient, one event loop",
        },
        "cells": cells,
        "paced_get_job": paced,
        "goal": {
            "rate_per_s": TARGET_RATE,
            "p99_ms": TARGET_P99_MS,
            "met": not paced["unfinished"]
            and paced["p99_ms"] is not None
            and paced["p99_ms"] <= TARGET_P99_MS
            and paced["throughput_per_s"] >= 0.95 * TARGET_RATE
            and not quick,
        },
        "service_time": work,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    write_result("api-load", run(args.quick, args.seconds, tuple(args.clients)), args.out)


if __name__ == "__main__":
    main()
