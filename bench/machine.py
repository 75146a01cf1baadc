"""What every CPU bench shares: the machine it ran on, min/median ratios of alternated runs,
and where its results file goes (bench/results/<name>-cpu-<date>.json)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict[str, Any]:
    import psutil

    info: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "load_average_1m": os.getloadavg()[0],
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # the API benches run without the worker extra
        info["torch"] = None
    return info


def stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def ratio_summary(
    values: dict[str, list[float]], ours: str, baseline: str, higher_is_better: bool = True
) -> dict[str, Any]:
    """Min, median and max of each side, and ours/baseline of the medians and of the best runs
    (the best run is the least disturbed by other load on the machine)."""
    best = max if higher_is_better else min
    return {
        ours: stats(values[ours]),
        baseline: stats(values[baseline]),
        "ratio_median": statistics.median(values[ours]) / statistics.median(values[baseline]),
        "ratio_best": best(values[ours]) / best(values[baseline]),
    }


def result_path(name: str) -> Path:
    return RESULTS / f"{name}-cpu-{dt.date.today().isoformat()}.json"


def write_result(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write {name, date, machine, **result}; the machine is read at the end, so its load
    average is the one the bench saw."""
    path = out or result_path(name)
    payload = {"bench": name, "date": dt.date.today().isoformat(), "machine": machine_info()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload | result, indent=2) + "\n")
    print(f"wrote {path}", flush=True)
    return path
