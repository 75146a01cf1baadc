"""Where a few-shot job's time goes between phases, before and after the cheaper hand-off.

Runs the bundled example (examples/circuit-boards) through the real standalone stack
(`relaytune up`: API, one worker per pool, SQLite, embedded Redis; the S3 endpoint the test
launcher gives, else the local object store) for each requested number of epochs, once with
the earlier behaviour and once with the current one, alternating, and reads every figure back
from the job (each phase's measured timing: start-up, model fetch, input download, training,
checkpoint upload), its events (`GET /v1/jobs/{id}/events`), its checkpoints and the workers'
logs:

    before  RELAYTUNE_WORKER_PRELOAD=false            each phase's child imports torch & co.
            RELAYTUNE_WORKER_THREADS=<torch default>   every worker uses all cores
            RELAYTUNE_ARTIFACT_COMPACT_IMAGES=false    fp32 patches in the artifact
    after   the defaults: preloaded parent, threads = CPUs / 3 workers, 8-bit images

Usage: python -m bench.handoff [--epochs 2 8] [--repeats 1] [--out bench/results/...json]
`make bench` runs `run()`: two jobs of 2 epochs per configuration (one in --quick mode).
This is a measurement, not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.machine import RESULTS, ratio_summary
from orchestrator.timings import COMPONENTS

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "circuit-boards"
TRAINING = ("warmup", "final")
PHASES = ("preprocess", *TRAINING)
# Per phase, from the job's own timing (GET /v1/jobs/{id}): what is paid once per phase.
TIMING_FIELDS = (
    "queue_wait_s",
    *(f"{component}_s" for component in COMPONENTS),
    "other_s",
    "billed_s",
    "input_bytes",
)
ARTIFACT_LOG = re.compile(
    r"artifact (\S+): (\d+) samples loaded in ([\d.]+)s, "
    r"patches rebuilt in ([\d.]+)s"
)


def configurations(default_threads: int) -> dict[str, dict[str, str]]:
    return {
        "before": {
            "RELAYTUNE_WORKER_PRELOAD": "false",
            "RELAYTUNE_WORKER_THREADS": str(default_threads),
            "RELAYTUNE_ARTIFACT_COMPACT_IMAGES": "false",
        },
        "after": {},
    }


def s3_settings(bucket_suffix: str) -> dict[str, str]:
    """The test launcher's S3 endpoint (`make bench` runs under it) in a bucket of this stack's
    own, so hand-offs cross a real S3 API; none: the stack keeps its local object store."""
    from tests.backing.s3 import (
        DEFAULT_S3_SETTINGS,
        ENV_S3_ACCESS_KEY,
        ENV_S3_ENDPOINT,
        ENV_S3_REGION,
        ENV_S3_SECRET_KEY,
    )

    endpoint = os.environ.get(ENV_S3_ENDPOINT)
    if not endpoint:
        return {}

    def setting(name: str) -> str:
        return os.environ.get(name) or DEFAULT_S3_SETTINGS[name]

    return {
        "RELAYTUNE_S3_ENDPOINT": endpoint,
        "RELAYTUNE_S3_BUCKET": f"relaytune-handoff-{bucket_suffix}".lower(),
        "RELAYTUNE_S3_ACCESS_KEY": setting(ENV_S3_ACCESS_KEY),
        "RELAYTUNE_S3_SECRET_KEY": setting(ENV_S3_SECRET_KEY),
        "RELAYTUNE_S3_REGION": setting(ENV_S3_REGION),
    }


class Stack:
    """`relaytune up` in a fresh data directory, stopped with Ctrl-C's signal."""

    def __init__(self, data_dir: Path, env: dict[str, str]):
        from services.cli.standalone import free_port

        self.data_dir = data_dir
        self.env = {**s3_settings(data_dir.name), **env}
        self.url = f"http://127.0.0.1:{free_port()}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.cli.main",
                "up",
                "--port",
                self.url.rsplit(":")[-1],
                "--data-dir",
                str(data_dir),
            ],
            env={**base, "PYTHONPATH": str(ROOT), **self.env},
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> httpx.Client:
        try:
            return self._ready()
        except BaseException:  # a stack that never came up is still stopped
            self._stop()
            raise

    def _ready(self) -> httpx.Client:
        from services.cli.standalone import wait_ready

        wait_ready(self.url, timeout=300, alive=lambda: self.process.poll() is None)
        # The API answers before the workers have started (and preloaded): wait for each,
        # so that the first job's queue wait is not their start-up.
        deadline = time.monotonic() + 300
        logs = [self.data_dir / "logs" / f"worker-{pool}.log" for pool in ("t4", "a10", "a100")]
        while not all(log.exists() and " ready." in log.read_text() for log in logs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {self.data_dir / 'logs'}")
            time.sleep(0.5)
        key = (self.data_dir / "api-key").read_text().strip()
        self.http = httpx.Client(
            base_url=self.url, timeout=60, headers={"Authorization": f"Bearer {key}"}
        )
        return self.http

    def __exit__(self, *_: object) -> None:
        self.http.close()
        self._stop()

    def _stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def run_job(
    http: httpx.Client, epochs: int
) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    from services.cli.client import zip_folder

    files = {"file": ("circuit-boards.zip", zip_folder(EXAMPLE), "application/zip")}
    dataset = http.post("/v1/datasets", files=files).raise_for_status().json()
    body = {
        "dataset_id": dataset["id"],
        "hyperparameters": {"total_epochs": epochs, "warmup_epochs": max(1, epochs // 2)},
    }
    job = http.post("/v1/jobs", json=body).raise_for_status().json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1.0)
        job = http.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
    events: list[dict[str, Any]] = []
    while (
        batch := http.get(
            f"/v1/jobs/{job['id']}/events",
            params={"after": events[-1]["id"] if events else 0, "limit": 1000},
        )
        .raise_for_status()
        .json()
    ):
        events += batch
    checkpoints = http.get(f"/v1/jobs/{job['id']}/checkpoints").raise_for_status().json()
    return job, events, checkpoints


def _at(event: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(event["created_at"]).timestamp()


def phase_figures(events: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    """Seconds from the events of one phase (its last attempt). A metrics event is written
    when an optimizer step ends, so the first step starts about one step before it."""
    mine = [e for e in events if e["phase"] == phase]
    kinds = {e["type"]: e for e in mine}  # the last of each type
    started, ended = _at(kinds["phase_started"]), _at(kinds["phase_succeeded"])
    figures: dict[str, Any] = {
        "queue_wait_s": started - _at(next(e for e in mine if e["type"] == "phase_queued")),
        "duration_s": ended - started,
    }
    steps = [_at(e) for e in mine if e["type"] == "metrics"]
    if steps:
        intervals = [b - a for a, b in itertools.pairwise(steps)]
        step_s = statistics.median(intervals) if intervals else steps[0] - started
        figures |= {
            "steps": len(steps),
            "median_step_s": step_s,
            "startup_s": steps[0] - step_s - started,  # claim -> first step starts
            "train_s": steps[-1] - steps[0] + step_s,  # first step starts -> last step ends
            "tail_s": ended - steps[-1],  # evaluation, export, uploads after the last step
            "first_step_at": steps[0] - step_s,
            "last_step_at": steps[-1],
        }
    return figures


def artifact_loads(log_dir: Path) -> list[dict[str, Any]]:
    """What each training worker logged about loading the artifact."""
    found = []
    for pool in ("a10", "a100"):
        log = log_dir / f"worker-{pool}.log"
        for match in ARTIFACT_LOG.finditer(log.read_text() if log.exists() else ""):
            found.append(
                {
                    "pool": pool,
                    "format": match[1],
                    "samples": int(match[2]),
                    "torch_load_s": float(match[3]),
                    "rebuild_s": float(match[4]),
                }
            )
    return found


def stack_store(data_dir: Path, env: dict[str, str]) -> Any:
    """The object store the stack in `data_dir` with settings `env` wrote to."""
    from orchestrator.settings import Settings
    from orchestrator.storage import make_store

    s3 = {k.removeprefix("RELAYTUNE_").lower(): v for k, v in env.items() if "_S3_" in k}
    return make_store(Settings.model_validate({"data_dir": data_dir, **s3}))


def direct_artifact_load(store: Any, key: str) -> dict[str, float]:
    """Download and load the artifact as a training phase does."""
    from orchestrator.storage import download_dir
    from worker.recipe.preprocess import load_artifact

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        download_dir(store, key, Path(tmp))
        downloaded = time.perf_counter()
        load_artifact(Path(tmp))
        return {"download_s": downloaded - started, "load_s": time.perf_counter() - downloaded}


def phase_timing(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each phase's latest run as the worker measured it (zeros where it recorded none)."""
    timing = {}
    for phase in job["phases"]:
        recorded = phase.get("timing") or {}
        timing[phase["name"]] = {field: recorded.get(field, 0.0) for field in TIMING_FIELDS}
    return timing


def job_figures(
    job: dict[str, Any],
    events: list[dict[str, Any]],
    checkpoints: list[dict[str, Any]],
    store: Any,
) -> dict[str, Any]:
    phases = {p: phase_figures(events, p) for p in PHASES}
    submitted = _at(next(e for e in events if e["type"] == "job_submitted"))
    ended = _at(next(e for e in events if e["type"] == "job_succeeded"))
    wall = ended - submitted
    train = sum(phases[p].get("train_s", 0.0) for p in TRAINING)
    artifact = next(c for c in checkpoints if c["kind"] == "artifact")
    return {
        "job_id": job["id"],
        "status": job["status"],
        "wall_s": wall,
        "train_s": train,
        "fixed_overhead_s": wall - train,
        "fixed_overhead_share": (wall - train) / wall,
        "handoff_gap_s": phases["final"]["first_step_at"] - phases["warmup"]["last_step_at"],
        "artifact_bytes": artifact["bytes"],
        "artifact_direct": direct_artifact_load(store, artifact["key"]),
        "phases": phases,
        "timing": phase_timing(job),
    }


def measure(
    config: str, env: dict[str, str], epochs: list[int], work: Path, repeat: int
) -> list[dict[str, Any]]:
    data_dir = work / f"{config}-{repeat}"
    results = []
    stack = Stack(data_dir, env)
    with stack as http:
        store = stack_store(data_dir, stack.env)
        for index, count in enumerate(epochs):
            job, events, checkpoints = run_job(http, count)
            # Raw material beside the data directory, to recompute figures without a rerun.
            (work / f"{config}-{repeat}-{index}-{count}-epochs.json").write_text(
                json.dumps({"job": job, "events": events, "checkpoints": checkpoints})
            )
            if job["status"] != "succeeded":
                raise SystemExit(f"{config}: job {job['id']} {job['status']}: {job.get('error')}")
            figures = job_figures(job, events, checkpoints, store)
            results.append({"config": config, "epochs": count, "repeat": repeat, **figures})
            print(
                f"{config:6} {count} epochs: wall {figures['wall_s']:.1f}s, train "
                f"{figures['train_s']:.1f}s, overhead {figures['fixed_overhead_share']:.0%}, "
                f"hand-off gap {figures['handoff_gap_s']:.1f}s, artifact "
                f"{figures['artifact_bytes']} B",
                flush=True,
            )
    for entry in results:  # the log lines name no job: these are the stack's, both jobs'
        entry["artifact_loads_in_stack"] = artifact_loads(data_dir / "logs")
    return results


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """before/after of the job's wall time, its fixed overhead and the hand-off gap (lower is
    better, so a ratio below 1 is a saving), and the median per-phase timing of each side."""

    def values(pick: Any) -> dict[str, list[float]]:
        return {c: [pick(r) for r in runs if r["config"] == c] for c in ("after", "before")}

    summary: dict[str, Any] = {
        name: ratio_summary(values(lambda r, n=name: r[n]), "after", "before", False)
        for name in ("wall_s", "fixed_overhead_s", "handoff_gap_s")
    }
    summary["per_phase"] = {
        config: {
            phase: {
                field: statistics.median(
                    r["timing"][phase][field] for r in runs if r["config"] == config
                )
                for field in TIMING_FIELDS
            }
            for phase in PHASES
        }
        for config in ("after", "before")
    }
    return summary


def run(quick: bool) -> dict[str, Any]:
    """`make bench`'s form: a stack per configuration, each running the example at 2 epochs
    twice (once in quick mode), the configurations in turn."""
    import torch

    from worker.preload import preload

    default_threads = torch.get_num_threads()
    preload()
    jobs = [2] if quick else [2, 2]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="relaytune-handoff-") as tmp:
        for config, env in configurations(default_threads).items():
            runs += measure(config, env, jobs, Path(tmp), repeat=0)
    return {
        "what": "fixed per-phase overhead of the example job, before/after the cheaper hand-off",
        "object_store": "s3" if s3_settings("x") else "local",
        "torch_default_threads": default_threads,
        "configurations": configurations(default_threads),
        "summary": summarize(runs),
        "runs": runs,
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / f"handoff-epochs-cpu-{dt.date.today().isoformat()}.json",
    )
    args = parser.parse_args()
    from worker.preload import preload

    default_threads = torch.get_num_threads()  # before anything here sets it
    preload()  # the direct artifact loads below then time loading, not importing
    runs = []
    work = Path(tempfile.mkdtemp(prefix="relaytune-handoff-"))
    print(f"data directories and raw events under {work}", flush=True)
    for repeat in range(args.repeats):
        for config, env in configurations(default_threads).items():
            runs += measure(config, env, args.epochs, work, repeat)
    result = {
        "what": "fixed per-phase overhead of the example job, before/after the cheaper hand-off",
        "date": dt.date.today().isoformat(),
        "machine": {
            **report.machine(),
            "torch": torch.__version__,
            "torch_default_threads": default_threads,
        },
        "configurations": configurations(default_threads),
        "runs": runs,
    }
    report.write(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
