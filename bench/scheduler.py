"""The scheduler at scale: N jobs x 3 phases through real PostgreSQL, Redis and Celery workers.

One worker process per pool (t4, a10, a100) runs with the production Celery flags; its phases
do nothing (bench/scheduler_worker.py), so what is measured is the scheduler: submit, dispatch
after commit, broker, the worker's stale-delivery check, the child per phase, claim, lease,
completion and the dispatch of the next phase. Jobs are submitted through the orchestrator
(jobs.submit_job) into a database of the bench's own (alembic upgrade head) on the local
PostgreSQL server, and a Redis database claimed as the tests claim theirs.

Every figure is read back from the SQL rows: 0 lost (every job succeeded), 0 duplicated (every
phase attempt 1, one phase_started and one phase_succeeded event), the dispatch latency of each
phase transition (previous phase's finished_at to the next one's started_at), phases/s, and
the time of one reaper pass over the N finished jobs and, during the run, over live ones.

Usage: python -m bench.scheduler [--jobs 1000] [--label NAME] [--out bench/results/...json]
This is a measurement, not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.stack import private_database

ROOT = Path(__file__).resolve().parent.parent
POOLS = ("t4", "a10", "a100")
PHASES = ("preprocess", "warmup", "final")
BASE_DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_SERVER = "redis://127.0.0.1:6379/0"


def use_environment(env: dict[str, str]) -> None:
    """This process and the workers it starts read the same settings."""
    from tests.conftest import reset_caches

    os.environ.update(env)
    reset_caches()


@contextlib.contextmanager
def private_control_plane(prefix: str) -> Iterator[Path]:
    """A database, a Redis database and a scratch folder of the bench's own (yielded), with
    this process's settings, and so those of the workers it starts, pointing at them."""
    from tests.redis_databases import RedisDatabaseClaim

    with (
        RedisDatabaseClaim(REDIS_SERVER) as broker_url,
        private_database(BASE_DATABASE) as database_url,
        tempfile.TemporaryDirectory(prefix=prefix) as tmp,
    ):
        use_environment(
            {
                "RELAYTUNE_DATABASE_URL": database_url,
                "RELAYTUNE_BROKER_URL": broker_url,
                "RELAYTUNE_S3_ENDPOINT": "",
                "RELAYTUNE_DATA_DIR": str(Path(tmp) / "data"),
                "RELAYTUNE_ALLOWED_MODELS": "tiny",
                "RELAYTUNE_REAPER_INTERVAL_SECONDS": "0",
            }
        )
        yield Path(tmp)


@contextlib.contextmanager
def workers(
    log_dir: Path, extra_env: dict[str, str], loglevel: str = "INFO"
) -> Iterator[list[Path]]:
    procs, logs = [], []
    for pool in POOLS:
        log = log_dir / f"worker-{pool}.log"
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bench.scheduler_worker",
                    "--pool",
                    pool,
                    "--loglevel",
                    loglevel,
                ],
                cwd=ROOT,
                env=os.environ | extra_env,
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
    try:
        yield logs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def wait_for_workers(timeout: float = 180.0) -> float:
    from orchestrator import dispatch

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        seen = dispatch.get_dispatcher().live_workers() or {}
        if {f"gpu.{p}" for p in POOLS} <= {q for qs in seen.values() for q in qs}:
            return time.monotonic() - started
        time.sleep(1.0)
    raise SystemExit("the workers did not come up")


def submit(n: int) -> list[str]:
    from orchestrator import jobs
    from orchestrator.datasets import create_dataset
    from orchestrator.db import session_scope
    from orchestrator.models import Tenant
    from orchestrator.settings import get_settings
    from orchestrator.storage import get_store
    from tests.factories import dataset_zip

    with session_scope() as session:
        tenant = Tenant(name=f"bench-{uuid.uuid4().hex[:12]}")  # one per call (--serial)
        session.add(tenant)
        session.flush()
        tenant_id = tenant.id
        dataset_id = create_dataset(
            session,
            get_store(),
            get_settings(),
            tenant_id=tenant_id,
            filename="d.zip",
            data=dataset_zip(),
        ).id
    ids = []
    for _ in range(n):
        with session_scope() as session:
            job = jobs.submit_job(
                session,
                get_store(),
                tenant_id=tenant_id,
                dataset_id=dataset_id,
                base_model="tiny",
                hyperparameters={"warmup_epochs": 1, "total_epochs": 2},
                pools=None,
                metadata=None,
            )
            ids.append(job.id)
    return ids


def time_reaper_pass(*, sql_only: bool = False) -> float:
    """One reap() as the API's reaper loop runs it; sql_only leaves the broker out (no
    question about live workers, nothing found waiting) to show the database's share."""
    from orchestrator import dispatch
    from orchestrator.db import session_scope
    from orchestrator.reaper import reap
    from orchestrator.settings import get_settings

    settings = get_settings()
    if sql_only:
        dispatch.set_dispatcher(dispatch.RecordingDispatcher())
    started = time.perf_counter()
    try:
        with session_scope() as session:
            reap(session, max_attempts=settings.max_attempts, resend_after_seconds=60)
        return time.perf_counter() - started
    finally:
        if sql_only:
            dispatch.set_dispatcher(None)


def status_counts() -> dict[str, int]:
    from orchestrator.db import session_scope
    from orchestrator.models import Phase

    with session_scope() as session:
        rows = session.execute(select(Phase.status, func.count()).group_by(Phase.status)).all()
        return {status: count for status, count in rows}


def run_until_done(total_phases: int, stall_s: float, reap_every_s: float) -> dict[str, Any]:
    """Poll until every phase succeeded or nothing moved for stall_s; a reaper pass every
    reap_every_s, as the API's reaper loop would run one, timed over the live jobs."""
    last_change, last_done, live_passes = time.monotonic(), -1, []
    next_reap = time.monotonic() + reap_every_s
    while True:
        counts = status_counts()
        done = counts.get("succeeded", 0)
        if done != last_done:
            last_done, last_change = done, time.monotonic()
        if done + counts.get("failed", 0) + counts.get("cancelled", 0) >= total_phases:
            break
        if time.monotonic() - last_change > stall_s:
            print(f"stalled: {counts}", file=sys.stderr)
            break
        if reap_every_s and time.monotonic() >= next_reap:
            live_passes.append(time_reaper_pass())
            next_reap = time.monotonic() + reap_every_s
        time.sleep(0.5)
    return {"statuses": status_counts(), "reaper_pass_live_s": live_passes}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, Any]:
    ms = [v * 1000 for v in values]
    return {
        "n": len(ms),
        "p50_ms": percentile(ms, 0.5),
        "p90_ms": percentile(ms, 0.9),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": statistics.fmean(ms) if ms else None,
    }


def read_back(job_ids: list[str], submitted_at: dt.datetime) -> dict[str, Any]:
    """Correctness and latency, from the phases and events rows alone."""
    from orchestrator.db import session_scope
    from orchestrator.models import Event, Job, Phase

    with session_scope() as session:
        jobs_ok = session.scalar(
            select(func.count()).select_from(Job).where(Job.status == "succeeded")
        )
        phases = session.execute(
            select(
                Phase.job_id,
                Phase.name,
                Phase.position,
                Phase.status,
                Phase.attempt,
                Phase.queued_at,
                Phase.started_at,
                Phase.finished_at,
            ).order_by(Phase.job_id, Phase.position)
        ).all()
        events = session.execute(
            select(Event.job_id, Event.phase, Event.type, func.count()).group_by(
                Event.job_id, Event.phase, Event.type
            )
        ).all()
    per_phase: dict[tuple[str, str | None], dict[str, int]] = {}
    for job_id, phase, type_, count in events:
        per_phase.setdefault((job_id, phase), {})[type_] = count
    by_job: dict[str, list[Any]] = {}
    for row in phases:
        by_job.setdefault(row.job_id, []).append(row)
    not_once = [
        (row.job_id, row.name)
        for row in phases
        if row.status != "succeeded"
        or row.attempt != 1
        or per_phase.get((row.job_id, row.name), {}).get("phase_started") != 1
        or per_phase.get((row.job_id, row.name), {}).get("phase_succeeded") != 1
    ]
    transition, queued_to_started, first = [], [], []
    for rows in by_job.values():
        if rows[0].started_at and rows[0].queued_at:
            first.append((rows[0].started_at - rows[0].queued_at).total_seconds())
        for prev, nxt in itertools.pairwise(rows):
            if prev.finished_at and nxt.started_at:
                transition.append((nxt.started_at - prev.finished_at).total_seconds())
            if nxt.queued_at and nxt.started_at:
                queued_to_started.append((nxt.started_at - nxt.queued_at).total_seconds())
    finished = [r.finished_at for r in phases if r.finished_at]
    span = (max(finished) - submitted_at).total_seconds() if finished else None
    succeeded = sum(1 for r in phases if r.status == "succeeded")
    return {
        "jobs": len(job_ids),
        "jobs_succeeded": jobs_ok,
        "lost_jobs": len(job_ids) - (jobs_ok or 0),
        "phases_not_exactly_once": len(not_once),
        "examples_not_exactly_once": not_once[:5],
        "phases_succeeded": succeeded,
        "first_phase_wait": summary_ms(first),
        "transition_latency": summary_ms(transition),
        "transition_queued_to_started": summary_ms(queued_to_started),
        "wall_s_submit_to_last_finish": span,
        "phases_per_s": succeeded / span if span else None,
    }


def run(
    jobs: int,
    label: str,
    extra_env: dict[str, str],
    stall_s: float,
    keep_logs: Path | None,
    loglevel: str = "INFO",
    *,
    serial: bool = False,
) -> dict[str, Any]:
    with private_control_plane("relaytune-bench-sched-") as tmp:
        from orchestrator import dispatch

        dispatch.set_dispatcher(None)
        with workers(tmp, extra_env, loglevel) as logs:
            ready_s = wait_for_workers()
            submitted_at = dt.datetime.now(dt.UTC)
            t0 = time.perf_counter()
            if serial:  # one job at a time: every pool idle when its phase is sent
                job_ids, progress = [], {}
                for done in range(1, jobs + 1):
                    job_ids += submit(1)
                    progress = run_until_done(3 * done, stall_s, reap_every_s=0)
            else:
                job_ids = submit(jobs)
                progress = run_until_done(3 * jobs, stall_s, reap_every_s=5.0)
            submit_s = time.perf_counter() - t0
            result = read_back(job_ids, submitted_at)
            passes = [time_reaper_pass() for _ in range(3)]
            sql_passes = [time_reaper_pass(sql_only=True) for _ in range(3)]
            tails = {log.name: log.read_text()[-2000:] for log in logs}
            if keep_logs:
                keep_logs.mkdir(parents=True, exist_ok=True)
                for log in logs:
                    (keep_logs / log.name).write_text(log.read_text())
        result |= {
            "label": label,
            "mode": "serial" if serial else "burst",
            "extra_env": extra_env,
            "workers_ready_s": ready_s,
            "submit_s": submit_s,
            "reaper_pass_at_rest_s": passes,
            "reaper_pass_at_rest_sql_only_s": sql_passes,
            **progress,
        }
        if result["lost_jobs"] or result["phases_not_exactly_once"]:
            result["worker_log_tails"] = tails
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--label", default="current")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the workers only"
    )
    parser.add_argument("--stall-s", type=float, default=120.0)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--worker-loglevel", default="INFO")
    parser.add_argument(
        "--serial",
        action="store_true",
        help="submit each job after the previous one finished: dispatch latency on idle pools",
    )
    parser.add_argument("--keep-logs", type=Path, default=None, help="copy the worker logs here")
    args = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in args.env)
    result = run(
        args.jobs,
        args.label,
        extra_env,
        args.stall_s,
        args.keep_logs,
        args.worker_loglevel,
        serial=args.serial,
    )
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    text_out = json.dumps(result, indent=2, default=str)
    print(text_out)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        existing = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
        existing["runs"].append(result)
        args.out.write_text(json.dumps(existing, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
