"""How close the estimate at submit comes to what a phase really billed, and what the hand-off
between the training phases costs as a relay and fused on one pool.

Runs the bundled example (examples/circuit-boards, the default tiny model) through the real
standalone stack (`relaytune up`: API, one worker per pool, SQLite, embedded Redis, local
object store), in a fresh data directory so that nothing was learned before:

1. accuracy: the same relay job (t4 / a10 / a100) `--learn` times to learn profiles, then once
   more; for every job and phase, the `estimate` stored at submit against the run's `timing`
   (seconds by component, total, cost) and the error in %.
2. hand-off: the same job as a relay and fused (warmup and final on one pool), alternating,
   `--repeats` times each; per phase the fixed overhead (billed seconds that are not training
   or evaluation) and the hand-off gap (the warmup's last `metrics` event to the final's first,
   from `GET /v1/jobs/{id}/events`), min and median.

Usage: python -m bench.estimate_accuracy [--epochs 8] [--learn 2] [--repeats 2]
This is a measurement, not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import report
from bench.handoff import EXAMPLE, Stack, _at

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
RELAY = {"preprocess": "t4", "warmup": "a10", "final": "a100"}
FUSED = {"preprocess": "t4", "warmup": "a100", "final": "a100"}
PHASES = ("preprocess", "warmup", "final")
JOB_TIMEOUT_S = 300.0
# The estimate's components, by the name of the timing field that measures each; a
# preprocess run files building the artifact, its work, under train_s.
COMPONENTS = {
    "startup": "startup_s",
    "input_download": "input_download_s",
    "preprocess": "train_s",
    "train": "train_s",
    "evaluate": "evaluate_s",
    "export": "export_s",
    "checkpoint_upload": "checkpoint_upload_s",
}


def run_job(
    http: httpx.Client, dataset_id: str, epochs: int, pools: dict[str, str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Submit, wait (cancel and give up after JOB_TIMEOUT_S), return the job and its events."""
    body = {
        "dataset_id": dataset_id,
        "pools": pools,
        "hyperparameters": {"total_epochs": epochs, "warmup_epochs": max(1, epochs * 5 // 8)},
    }
    job = http.post("/v1/jobs", json=body).raise_for_status().json()
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        if time.monotonic() > deadline:
            http.post(f"/v1/jobs/{job['id']}/cancel")
            raise SystemExit(f"job {job['id']} still {job['status']} after {JOB_TIMEOUT_S:.0f}s")
        time.sleep(0.5)
        job = http.get(f"/v1/jobs/{job['id']}").raise_for_status().json()
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} {job['status']}: {job.get('error')}")
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
    return job, events


def _error_pct(estimated: float, actual: float) -> float | None:
    return round(100 * (estimated - actual) / actual, 1) if actual else None


def phase_accuracy(phase: dict[str, Any]) -> dict[str, Any]:
    """The phase's estimate beside its timing, component by component."""
    estimate, timing = phase["estimate"] or {}, phase["timing"]
    seconds = estimate.get("seconds", {})
    used = [
        c for c in COMPONENTS if c != ("train" if phase["name"] == "preprocess" else "preprocess")
    ]
    components = {
        c: {
            "estimated_s": round(seconds.get(c, 0.0), 3),
            "actual_s": round(timing[COMPONENTS[c]], 3),
        }
        for c in used
    }
    components["other"] = {
        "estimated_s": round(seconds.get("other", 0.0), 3),
        "actual_s": round(timing["other_s"], 3),
    }
    estimated_s = float(estimate.get("total_seconds", 0.0))
    estimated_cost = float(estimate.get("cost", {}).get("amount", 0))
    actual_cost = float(phase["cost"]["amount"])
    return {
        "phase": phase["name"],
        "pool": phase["pool"],
        "fused": timing["fused"],
        "sources": estimate.get("sources"),
        "components": components,
        "estimated_s": round(estimated_s, 3),
        "billed_s": round(timing["billed_s"], 3),
        "seconds_error_pct": _error_pct(estimated_s, timing["billed_s"]),
        "estimated_cost": estimated_cost,
        "actual_cost": actual_cost,
        "cost_error_pct": _error_pct(estimated_cost, actual_cost),
    }


def _metrics_at(events: list[dict[str, Any]], phase: str) -> list[float]:
    return [_at(e) for e in events if e["phase"] == phase and e["type"] == "metrics"]


def handoff_figures(job: dict[str, Any], events: list[dict[str, Any]]) -> dict[str, Any]:
    """Fixed overhead per phase (billed, less training and evaluation) and the hand-off gap."""
    overhead = {}
    for phase in job["phases"]:
        t = phase["timing"]
        overhead[phase["name"]] = round(
            t["billed_s"]
            - t["evaluate_s"]
            - (t["train_s"] if phase["name"] != "preprocess" else 0),
            3,
        )
    return {
        "job_id": job["id"],
        "fixed_overhead_s": overhead,
        "handoff_gap_s": round(
            _metrics_at(events, "final")[0] - _metrics_at(events, "warmup")[-1], 3
        ),
        "billed_s": {p["name"]: round(p["timing"]["billed_s"], 3) for p in job["phases"]},
    }


def _min_median(values: list[float]) -> dict[str, Any]:
    return {
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "values": [round(v, 3) for v in values],
    }


def summarise_handoff(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("relay", "fused"):
        mine = [r for r in runs if r["mode"] == mode]
        out[mode] = {
            "handoff_gap_s": _min_median([r["handoff_gap_s"] for r in mine]),
            "fixed_overhead_s": {
                p: _min_median([r["fixed_overhead_s"][p] for r in mine]) for p in PHASES
            },
            "billed_s": {p: _min_median([r["billed_s"][p] for r in mine]) for p in PHASES},
        }
    return out


def summarise_accuracy(jobs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per phase of the judged (last) job: its error, and how far the estimate is from the
    median of the same phase's earlier runs, to tell the estimator's bias from run-to-run noise
    (the earlier runs' spread)."""
    judged, earlier = jobs[-1], jobs[:-1]
    out = {}
    for row in judged["phases"]:
        billed = [
            r["billed_s"] for job in earlier for r in job["phases"] if r["phase"] == row["phase"]
        ]
        middle = statistics.median(billed) if billed else 0.0
        out[row["phase"]] = {
            "estimated_s": row["estimated_s"],
            "billed_s": row["billed_s"],
            "seconds_error_pct": row["seconds_error_pct"],
            "cost_error_pct": row["cost_error_pct"],
            "earlier_billed_s": billed,
            "estimate_vs_earlier_median_pct": _error_pct(row["estimated_s"], middle),
            "earlier_spread_pct": (
                round(100 * (max(billed) - min(billed)) / middle, 1) if billed else None
            ),
        }
    return out


def print_accuracy(label: str, rows: list[dict[str, Any]]) -> None:
    print(f"{label}:", flush=True)
    for r in rows:
        print(
            f"  {r['phase']:10} {r['pool']:5} estimated {r['estimated_s']:7.2f}s  "
            f"billed {r['billed_s']:7.2f}s  error {r['seconds_error_pct']:+6.1f}%  "
            f"cost {r['estimated_cost']:.6f} vs {r['actual_cost']:.6f} "
            f"({r['cost_error_pct']:+.1f}%)  {','.join(r['sources'] or [])}",
            flush=True,
        )


def machine() -> dict[str, Any]:
    return {**report.machine(), "load_average": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--learn",
        type=int,
        default=2,
        help="relay jobs run before the one whose estimate is judged",
    )
    parser.add_argument("--repeats", type=int, default=2, help="relay and fused jobs each")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the stack below is stopped either way.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    date = dt.date.today().isoformat()
    work = Path(tempfile.mkdtemp(prefix="relaytune-accuracy-"))
    print(f"data directory and raw jobs under {work}", flush=True)
    accuracy: list[dict[str, Any]] = []
    handoff: list[dict[str, Any]] = []
    with Stack(work / "stack", {}) as http:
        from services.cli.client import zip_folder

        files = {"file": ("circuit-boards.zip", zip_folder(EXAMPLE), "application/zip")}
        dataset = http.post("/v1/datasets", files=files).raise_for_status().json()
        for n in range(args.learn + 1):
            job, events = run_job(http, dataset["id"], args.epochs, RELAY)
            (work / f"accuracy-{n}.json").write_text(json.dumps({"job": job, "events": events}))
            rows = [phase_accuracy(p) for p in job["phases"]]
            accuracy.append(
                {"job": n + 1, "job_id": job["id"], "learned_from_jobs": n, "phases": rows}
            )
            print_accuracy(f"relay job {n + 1} (profiles from {n} earlier jobs)", rows)
        for repeat in range(args.repeats):
            for mode, pools in (("relay", RELAY), ("fused", FUSED)):
                job, events = run_job(http, dataset["id"], args.epochs, pools)
                (work / f"{mode}-{repeat}.json").write_text(
                    json.dumps({"job": job, "events": events})
                )
                figures = handoff_figures(job, events)
                rows = [phase_accuracy(p) for p in job["phases"]]
                handoff.append(
                    {
                        "mode": mode,
                        "repeat": repeat,
                        "pools": pools,
                        **figures,
                        "estimate_accuracy": rows,
                    }
                )
                print(
                    f"{mode} {repeat + 1}: hand-off gap {figures['handoff_gap_s']:.2f}s, "
                    f"fixed overhead {figures['fixed_overhead_s']}",
                    flush=True,
                )
                print_accuracy(f"  {mode} {repeat + 1} estimate", rows)
    common = {
        "date": date,
        "machine": machine(),
        "model": "tiny-qwen3-vl",
        "example": "examples/circuit-boards",
        "hyperparameters": {
            "total_epochs": args.epochs,
            "warmup_epochs": max(1, args.epochs * 5 // 8),
        },
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    accuracy_path = args.out_dir / f"estimate-accuracy-cpu-{date}.json"
    accuracy_path.write_text(
        json.dumps(
            {
                "what": "estimate at submit vs billed timing per phase, relay t4/a10/a100",
                **common,
                "summary": summarise_accuracy(accuracy),
                "jobs": accuracy,
            },
            indent=2,
        )
        + "\n"
    )
    handoff_path = args.out_dir / f"handoff-fusion-cpu-{date}.json"
    handoff_path.write_text(
        json.dumps(
            {
                "what": "fixed overhead per phase and warmup->final hand-off gap, relay vs fused",
                **common,
                "summary": summarise_handoff(handoff),
                "runs": handoff,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {accuracy_path} and {handoff_path}")


if __name__ == "__main__":
    main()
