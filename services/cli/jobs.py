"""`relaytune jobs`: list, show, watch, cancel, requeue, events and download, over the API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from orchestrator.lifecycle import JobStatus
from services.cli.client import Client
from services.cli.connection import api_url, client_options
from services.cli.progress import EPOCH_HELP
from services.cli.render import phase_table
from services.cli.watch import follow

# Off a terminal (logs, tests) rich would wrap the tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 120)

WATCH_HELP = (
    "One progress bar per phase: pool, the phase's own steps, "
    f"{EPOCH_HELP}, training loss, elapsed time, cost so far and the time left (eta). "
    "Exits 0 when the job succeeds, 1 when it fails or is cancelled; Ctrl-C stops watching "
    "and leaves the job running."
)


def reattach_command(client: Client, job_id: str) -> str:
    """The command that watches the job again, with the options this one was given."""
    parts = ["relaytune"]
    data_dir = click.get_current_context().find_root().params.get("data_dir")
    if data_dir is not None:
        parts += ["--data-dir", str(data_dir)]
    parts += ["jobs", "watch", job_id]
    if client.url != api_url(None):
        parts += ["--url", client.url]
    return " ".join(parts)


def watch_to_end(client: Client, job_id: str) -> dict[str, Any]:
    """Follow the job; a job that failed or was cancelled ends the command with status 1,
    Ctrl-C with 130 and the command that re-attaches."""
    try:
        job = follow(client, job_id, console)
    except KeyboardInterrupt:
        console.print(
            f"\nstopped watching; job {job_id} continues.\n"
            f"Re-attach with: {reattach_command(client, job_id)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(130)
    if job["status"] != JobStatus.SUCCEEDED:
        error = job.get("error") or {}
        detail = f": {error['message']}" if error.get("message") else ""
        raise click.ClickException(f"job {job['id']} {job['status']}{detail}")
    return job


@click.group()
def jobs() -> None:
    """Your jobs: list, show, watch, cancel, requeue, events, download."""


@jobs.command("list")
@client_options
@click.option("--status", default=None, help="Only jobs in this status (e.g. running).")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
def jobs_list(client: Client, status: str | None, limit: int, offset: int) -> None:
    """Your jobs, newest first."""
    page = client.jobs(status, limit, offset)
    table = Table(title=f"jobs {offset + 1}-{offset + len(page['data'])} of {page['total']}")
    table.add_column("id", no_wrap=True)  # whole, to copy into the next command
    table.add_column("status")
    table.add_column("created", no_wrap=True)
    for column in ("base model", "phases", "cost"):
        table.add_column(column, justify="right" if column == "cost" else "left")
    for job in page["data"]:
        phases = " ".join(f"{p['name'][0]}:{p['status']}" for p in job["phases"])
        cost = job["cost"]
        table.add_row(
            job["id"],
            job["status"],
            job["created_at"][:19].replace("T", " "),
            job["base_model"],
            phases,
            f"{float(cost['amount']):.4f} {cost['currency']}",
        )
    console.print(table)


@jobs.command("show")
@click.argument("job_id")
@client_options
def jobs_show(job_id: str, client: Client) -> None:
    """One job: its phases, progress, cost and error."""
    job = client.job(job_id)
    console.print(phase_table(job))
    facts = {
        "dataset": job["dataset_id"],
        "base model": job["base_model"],
        "created": job["created_at"],
        "finished": job.get("finished_at") or "-",
        "budget": f"{job['max_cost']['amount']} {job['max_cost']['currency']}"
        if job.get("max_cost")
        else "none",
        "hyperparameters": json.dumps(job["hyperparameters"], sort_keys=True),
    }
    if job.get("error"):
        facts["error"] = f"{job['error']['code']}: {job['error']['message']}"
    for phase in job["phases"]:
        if phase.get("error"):
            facts[f"{phase['name']} error"] = (
                f"{phase['error']['code']}: {phase['error']['message']}"
            )
    for name, value in facts.items():
        console.print(f"{name}: {value}", markup=False, highlight=False, soft_wrap=True)


@jobs.command("watch", help=f"Follow JOB_ID until it ends. {WATCH_HELP}")
@click.argument("job_id")
@client_options
def jobs_watch(job_id: str, client: Client) -> None:
    watch_to_end(client, job_id)


@jobs.command("cancel")
@click.argument("job_id")
@client_options
def jobs_cancel(job_id: str, client: Client) -> None:
    """Cancel: waiting phases stop now, a running one at its next step."""
    job = client.cancel(job_id)
    running = [p["name"] for p in job["phases"] if p["status"] == "running"]
    note = f"; {', '.join(running)} stops at its next step" if running else ""
    console.print(f"job {job_id} {job['status']}{note}", markup=False, highlight=False)


@jobs.command("requeue")
@click.argument("job_id")
@click.argument("phase", type=click.Choice(["preprocess", "warmup", "final"]))
@click.option(
    "--from",
    "start_from",
    type=click.Choice(["input", "checkpoint"]),
    default=None,
    help="input: start the phase over; checkpoint: continue from its latest checkpoint "
    "(the default for a failed or cancelled phase).",
)
@client_options
def jobs_requeue(job_id: str, phase: str, start_from: str | None, client: Client) -> None:
    """Run PHASE again; the later phases follow."""
    job = client.requeue(job_id, phase, start_from)
    statuses = ", ".join(f"{p['name']} {p['status']}" for p in job["phases"])
    console.print(f"job {job_id} {job['status']}: {statuses}", markup=False, highlight=False)


@jobs.command("events")
@click.argument("job_id")
@click.option("--after", type=click.IntRange(min=0), default=0, help="Only events after this id.")
@client_options
def jobs_events(job_id: str, after: int, client: Client) -> None:
    """The job's timeline, one event a line: id, time, type, phase#attempt, data."""
    while True:
        page = client.events(job_id, after=after)
        for event in page:
            phase = event.get("phase") or "-"
            if event.get("attempt"):
                phase += f"#{event['attempt']}"
            data = json.dumps(event.get("data") or {}, sort_keys=True, separators=(",", ":"))
            when = event["created_at"][:19]
            click.echo(f"{event['id']:>6} {when} {event['type']:<18} {phase:<12} {data}")
            after = event["id"]
        if len(page) < 200:
            return


@jobs.command("download")
@click.argument("job_id")
@click.option("--merged", is_flag=True, help="The base model with the adapter merged in.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Default: relaytune-JOB_ID-adapter.zip (or -merged.zip) here.",
)
@client_options
def jobs_download(job_id: str, merged: bool, output: Path | None, client: Client) -> None:
    """The job's LoRA adapter (PEFT format) as a zip."""
    kind = "merged" if merged else None
    target = output or Path(f"relaytune-{job_id}-{kind or 'adapter'}.zip")
    size = client.download_adapter(job_id, target, kind=kind)
    what = "merged model" if merged else "adapter (PEFT format)"
    console.print(f"{what}: {target.resolve()} ({size} bytes)", markup=False, highlight=False)
