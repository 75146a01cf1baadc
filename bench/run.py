"""Run the CPU benches, each writing bench/results/<name>-cpu-<date>.json (see BENCHMARKS.md).

    train-step    relaytune's training step vs a plain HF Trainer + peft script
    object-store  S3Store vs raw boto3 on the same endpoint
    api-load      the API's latency and throughput on loopback, where a request's time goes
    data-scale    upload and preprocess per image at 20 / 200 / 2,000 images
    handoff       the example job's per-phase start-up, downloads, uploads and hand-off gap
    scheduler     do-nothing phases through real Redis, PostgreSQL and Celery workers: lost,
                  duplicated, dispatch latency (burst and one job at a time); the reaper at
                  1,000 jobs

PostgreSQL, Redis and S3 are found or started as the test launcher does (tests/backing).
Usage: python -m bench.run [--quick] [--only NAME ...] [--out-dir DIR]
--quick runs every bench at tiny sizes (a check that they work, not a measurement).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.machine import RESULTS, write_result


def _train_step(quick: bool) -> dict[str, Any]:
    from bench import train_step

    return train_step.run(quick)


def _object_store(quick: bool) -> dict[str, Any]:
    from bench import object_store

    return object_store.run(quick)


def _api_load(quick: bool) -> dict[str, Any]:
    from bench import api_load

    return api_load.run(quick)


def _data_scale(quick: bool) -> dict[str, Any]:
    from bench import data_scale

    return data_scale.run(quick)


def _handoff(quick: bool) -> dict[str, Any]:
    from bench import handoff

    return handoff.run(quick)


def _scheduler(quick: bool) -> dict[str, Any]:
    from bench import scheduler, scheduler_reaper

    burst, serial, reaper = (10, 3, 20) if quick else (200, 20, 1000)
    runs = {
        "burst": scheduler.run(burst, "current", {}, stall_s=120.0, keep_logs=None),
        "serial": scheduler.run(serial, "current", {}, 120.0, None, serial=True),
    }
    return {
        "what": "the scheduler with do-nothing phases; 1,000 jobs: python -m bench.scheduler",
        "goal": {"transition_p50_ms": 50},
        **runs,
        "reaper": scheduler_reaper.run(reaper),
    }


@contextlib.contextmanager
def own_environment() -> Iterator[None]:
    """A bench may point this process at databases of its own (bench.scheduler does): the
    next bench starts from the launcher's settings again."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if "tests.conftest" in sys.modules:
            sys.modules["tests.conftest"].reset_caches()
        if "orchestrator.dispatch" in sys.modules:
            sys.modules["orchestrator.dispatch"].set_dispatcher(None)


BENCHES: dict[str, Callable[[bool], dict[str, Any]]] = {
    "train-step": _train_step,
    "object-store": _object_store,
    "api-load": _api_load,
    "data-scale": _data_scale,
    "handoff": _handoff,
    "scheduler": _scheduler,
}


def run(quick: bool, only: list[str], out_dir: Path) -> dict[str, Path]:
    written = {}
    for name in only:
        print(f"{name}{' (quick)' if quick else ''}", flush=True)
        started = time.perf_counter()
        with own_environment():
            result = BENCHES[name](quick)
        result["bench_seconds"] = time.perf_counter() - started
        result["quick"] = quick
        date = time.strftime("%Y-%m-%d")
        written[name] = write_result(name, result, out_dir / f"{name}-cpu-{date}.json")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a check, not figures")
    parser.add_argument("--only", nargs="+", choices=list(BENCHES), default=list(BENCHES))
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.quick, args.only, args.out_dir)


if __name__ == "__main__":
    main()
