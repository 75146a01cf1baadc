"""Rich tables of a job's phases: what the user watches while a job runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.table import Table


def _duration(phase: dict[str, Any]) -> str:
    if not phase.get("started_at"):
        return "-"
    start = datetime.fromisoformat(phase["started_at"])
    end = datetime.fromisoformat(phase["finished_at"]) if phase.get("finished_at") else None
    if end is None:
        return "…"
    return f"{(end - start).total_seconds():.1f}s"


def phase_table(job: dict[str, Any]) -> Table:
    table = Table(title=f"job {job['id']} — {job['status']}")
    for column in ("phase", "pool", "status", "attempt", "steps", "epoch", "duration", "cost"):
        table.add_column(column, justify="right" if column in ("attempt", "cost") else "left")
    for phase in job["phases"]:
        progress = phase["progress"]
        steps = (f"{progress['step']}/{progress['total_steps']}" if progress["total_steps"]
                 else "-")
        epoch = str(progress["epoch"] + 1) if progress["total_steps"] else "-"
        table.add_row(phase["name"], f"{phase['pool']} ({phase['gpu_model']})", phase["status"],
                      str(phase["attempt"]), steps, epoch, _duration(phase),
                      f"{float(phase['cost']['amount']):.6f} {phase['cost']['currency']}")
    cost = job["cost"]
    table.caption = f"total cost {float(cost['amount']):.6f} {cost['currency']}"
    return table


def progress_line(job: dict[str, Any]) -> str:
    """One line per change, for logs and terminals without live redraw."""
    parts = []
    for phase in job["phases"]:
        progress = phase["progress"]
        steps = f" {progress['step']}/{progress['total_steps']}" if progress["total_steps"] else ""
        parts.append(f"{phase['name']}@{phase['pool']}: {phase['status']}{steps} "
                     f"{float(phase['cost']['amount']):.6f} {phase['cost']['currency']}")
    return f"[{job['status']}] " + " | ".join(parts)
