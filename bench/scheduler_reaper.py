"""What one reaper pass costs over N jobs, with no worker running: a backlog the reaper must
look at, and every run's lease expired at once (every worker died).

Same services as bench/scheduler.py (a database of its own on the local PostgreSQL server,
a claimed Redis database). Three passes of each kind, each with the broker (as the API's
reaper loop runs it: it asks which workers are live, waiting out the broadcast's 1 s reply
window, and which messages are waiting) and without it (the database's share; a broker that
cannot be asked makes the backlog pass re-send every stale phase, as its backoff allows):

    rest      N jobs, first phase queued and just sent: nothing to do
    backlog   the same, every queued phase older than the re-send interval: each checked
              against the messages waiting in the broker, none re-sent
    expired   every first phase running with an expired lease: all N re-queued, once in one
              transaction (`reap`, as before) and once as the API's round does it, in
              transactions of RELAYTUNE_REAPER_BATCH_SIZE (`reap_in_rounds`): the total, and
              how long until the first re-queued phase was sent to its queue

Usage: python -m bench.scheduler_reaper [--jobs 1000] [--out bench/results/...json]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update

from bench.scheduler import private_control_plane, submit


def timed_pass(*, resend_after_seconds: int, with_broker: bool) -> float:
    from orchestrator import dispatch
    from orchestrator.db import session_scope
    from orchestrator.reaper import reap
    from orchestrator.settings import get_settings

    if not with_broker:
        dispatch.set_dispatcher(dispatch.RecordingDispatcher())
    started = time.perf_counter()
    try:
        with session_scope() as session:
            reap(
                session,
                max_attempts=get_settings().max_attempts,
                resend_after_seconds=resend_after_seconds,
            )
        return time.perf_counter() - started
    finally:
        dispatch.set_dispatcher(None)


def passes(resend_after_seconds: int) -> dict[str, list[float]]:
    return {
        "with_broker_s": [
            timed_pass(resend_after_seconds=resend_after_seconds, with_broker=True)
            for _ in range(3)
        ],
        "sql_only_s": [
            timed_pass(resend_after_seconds=resend_after_seconds, with_broker=False)
            for _ in range(3)
        ],
    }


def timed_rounds() -> dict[str, float | None]:
    """The API's reaper round (batched transactions) with the broker, and when its first
    message left."""
    from orchestrator import dispatch
    from orchestrator.reaper import reap_in_rounds
    from orchestrator.settings import get_settings

    real = dispatch.get_dispatcher()
    first_send: list[float] = []

    class Timed:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def send(self, message: dispatch.PhaseMessage) -> None:
            if not first_send:
                first_send.append(time.perf_counter())
            real.send(message)

    settings = get_settings()
    dispatch.set_dispatcher(Timed())
    started = time.perf_counter()
    try:
        reap_in_rounds(
            max_attempts=settings.max_attempts,
            resend_after_seconds=3600,
            batch=settings.reaper_batch_size,
        )
        total = time.perf_counter() - started
    finally:
        dispatch.set_dispatcher(None)
    return {
        "total_s": total,
        "first_sent_after_s": first_send[0] - started if first_send else None,
        "batch": settings.reaper_batch_size,
    }


def claim_all_then_expire(job_ids: list[str], attempt: int = 1) -> None:
    """Every first phase claimed as a worker would, then its lease put in the past."""
    from orchestrator import runs
    from orchestrator.db import session_scope
    from orchestrator.models import Phase, utcnow

    for job_id in job_ids:
        with session_scope() as session:
            runs.claim_phase(
                session,
                job_id=job_id,
                phase="preprocess",
                attempt=attempt,
                worker_id="bench/dead",
                lease_seconds=120,
            )
    with session_scope() as session:
        session.execute(
            update(Phase)
            .where(Phase.status == "running")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def run(jobs: int) -> dict[str, Any]:
    # The reaper logs a line for each run it re-queues: thousands here, none of them news.
    reaper_log = logging.getLogger("orchestrator.reaper")
    level = reaper_log.level
    reaper_log.setLevel(logging.ERROR)
    try:
        return _run(jobs)
    finally:
        reaper_log.setLevel(level)


def _run(jobs: int) -> dict[str, Any]:
    with private_control_plane("relaytune-bench-reaper-"):
        t0 = time.perf_counter()
        job_ids = submit(jobs)
        submit_s = time.perf_counter() - t0
        rest = passes(resend_after_seconds=3600)
        backlog = passes(resend_after_seconds=0)
        claim_all_then_expire(job_ids)
        expired = timed_pass(resend_after_seconds=3600, with_broker=True)  # one: it re-queues
        claim_all_then_expire(job_ids, attempt=2)  # the same again, for the batched round
        expired_rounds = timed_rounds()
    return {
        "jobs": jobs,
        "submit_s": submit_s,
        "submit_jobs_per_s": jobs / submit_s,
        "rest": rest,
        "backlog": backlog,
        "expired_all_requeued_s": expired,
        "expired_all_requeued_in_rounds": expired_rounds,
        "median_s": {
            "rest_with_broker": statistics.median(rest["with_broker_s"]),
            "rest_sql_only": statistics.median(rest["sql_only_s"]),
            "backlog_with_broker": statistics.median(backlog["with_broker_s"]),
            "backlog_sql_only": statistics.median(backlog["sql_only_s"]),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.jobs)
    print(json.dumps(result, indent=2))
    if args.out:
        existing = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
        existing["reaper"] = result
        args.out.write_text(json.dumps(existing, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
