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
        steps = f"{progress['step']}/{progress['total_steps']}" if progress["total_steps"] else "-"
        epoch = str(progress["epoch"] + 1) if progress["total_steps"] else "-"
        table.add_row(
            phase["name"],
            f"{phase['pool']} ({phase['gpu_model']})",
            phase["status"],
            str(phase["attempt"]),
            steps,
            epoch,
            _duration(phase),
            f"{float(phase['cost']['amount']):.6f} {phase['cost']['currency']}",
        )
    cost = job["cost"]
    table.caption = f"total cost {float(cost['amount']):.6f} {cost['currency']}"
    return table


def progress_line(job: dict[str, Any]) -> str:
    """One line per change, for logs and terminals without live redraw."""
    parts = []
    for phase in job["phases"]:
        progress = phase["progress"]
        steps = f" {progress['step']}/{progress['total_steps']}" if progress["total_steps"] else ""
        parts.append(
            f"{phase['name']}@{phase['pool']}: {phase['status']}{steps} "
            f"{float(phase['cost']['amount']):.6f} {phase['cost']['currency']}"
        )
    return f"[{job['status']}] " + " | ".join(parts)


def _phase_cell(phase: dict[str, Any]) -> str:
    if not phase["feasible"]:
        return f"{phase['pool']}: does not fit"
    return f"{phase['pool']} {phase['total_seconds']:.0f}s {float(phase['cost']['amount']):.4f}"


def plans_table(answer: dict[str, Any]) -> Table:
    """The plans of an estimate side by side: per phase pool, seconds and cost; the total;
    whether it fits; what it saves against every training phase on the priciest pool."""
    plans = answer["plans"]
    top = next((p for p in plans if p["name"] == answer["top_tier"]), None)
    top_cost = float(top["cost"]["amount"]) if top and top["feasible"] else None
    table = Table(
        title=f"estimate for {answer['model_key']} — {answer['dataset']['num_samples']} samples"
    )
    phases = [p["phase"] for p in plans[0]["phases"]]
    for column in ("plan", *phases, "seconds", "cost", "fits", "vs top tier"):
        table.add_column(column, justify="right" if column in ("seconds", "cost") else "left")
    for plan in plans:
        cost = float(plan["cost"]["amount"])
        saving = "-"
        if top_cost and plan["feasible"]:
            percent = (top_cost - cost) / top_cost * 100
            saving = f"saves {percent:.0f}%" if percent >= 0 else f"costs {-percent:.0f}% more"
        fits = plan["feasible"]
        table.add_row(
            plan["name"],
            *(_phase_cell(p) for p in plan["phases"]),
            f"{plan['total_seconds']:.0f}" if fits else "-",
            f"{cost:.6f} {plan['cost']['currency']}" if fits else "-",
            "yes" if fits else "no",
            saving,
        )
    notes = [f"chosen: {answer['chosen']}"]
    blocked = [f"{p['name']}: {p['reason']}" for p in plans if not p["feasible"]]
    notes += blocked[:2]
    queues = [
        f"{q['pool']} {q['queued_phases']} queued (~{q['expected_wait_s']:.0f}s)"
        for q in answer["queues"]
        if q["queued_phases"]
    ]
    if queues:
        notes.append("queues: " + ", ".join(queues))
    table.caption = "\n".join(notes)
    return table
