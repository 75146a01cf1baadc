"""Operator commands that talk to the job store directly (like `api-key create`): pools and
tenants' spending limits. Prices and limits change here, not in code."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

# Off a terminal (logs, tests) rich would wrap the tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)

# CLI option -> PoolChanges field
POOL_OPTIONS = {
    "price": "hourly_price", "currency": "currency", "gpu_model": "gpu_model",
    "memory_gb": "gpu_memory_gb", "bf16": "supports_bf16", "queue": "queue",
    "peak_tflops": "peak_tflops", "memory_bandwidth_gbs": "memory_bandwidth_gbs",
}


@contextmanager
def _store() -> Iterator[Session]:
    """One transaction; a domain error becomes a usage message and changes nothing."""
    from orchestrator.db import session_scope
    from orchestrator.errors import RelaytuneError

    try:
        with session_scope() as session:
            yield session
    except RelaytuneError as exc:
        raise click.ClickException(exc.message) from exc


def _pool_changes(options: dict[str, Any]) -> Any:
    from orchestrator.pools import PoolChanges

    fields = {POOL_OPTIONS[k]: v for k, v in options.items() if v is not None}
    try:
        return PoolChanges.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0])
        option = next(k for k, v in POOL_OPTIONS.items() if v == field).replace("_", "-")
        raise click.BadParameter(first["msg"], param_hint=f"--{option}") from exc


def _pool_options(command: Any) -> Any:
    for decorator in reversed([
        click.option("--price", type=Decimal, help="Hourly price in the pools' currency."),
        click.option("--currency", help="ISO 4217 code, the same for every pool."),
        click.option("--gpu-model", help='e.g. "NVIDIA H100".'),
        click.option("--memory-gb", type=int, help="GPU memory in GiB."),
        click.option("--bf16/--no-bf16", default=None, help="Whether the GPU supports bf16."),
        click.option("--queue", help="Celery queue of the pool's workers (default gpu.NAME)."),
        click.option("--peak-tflops", type=float, help="Datasheet dense 16-bit TFLOP/s."),
        click.option("--memory-bandwidth-gbs", type=float, help="Memory bandwidth in GB/s."),
    ]):
        command = decorator(command)
    return command


def _print_pools(session: Session) -> None:
    from orchestrator import repository

    table = Table(title="pools")
    for column in ("name", "queue", "gpu", "memory", "bf16", "TFLOP/s", "GB/s", "price / h"):
        table.add_column(column)
    for p in repository.pools(session):
        table.add_row(p.name, p.queue or f"gpu.{p.name}", p.gpu_model, f"{p.gpu_memory_gb} GiB",
                      "yes" if p.supports_bf16 else "no", f"{p.peak_tflops:g}",
                      f"{p.memory_bandwidth_gbs:g}", f"{p.hourly_price} {p.currency}")
    console.print(table)


@click.group()
def pools() -> None:
    """List, add and change GPU pools (prices, queues, GPUs)."""


@pools.command("list")
def pools_list() -> None:
    """Every pool with its queue, GPU and hourly price."""
    with _store() as session:
        _print_pools(session)


@pools.command("set")
@click.argument("name")
@_pool_options
def pools_set(name: str, **options: Any) -> None:
    """Change fields of pool NAME; a new price applies to time not billed yet."""
    from orchestrator.models import Pool
    from orchestrator.pools import upsert_pool

    changes = _pool_changes(options)
    if not changes.model_dump(exclude_none=True):
        raise click.UsageError("nothing to change: give at least one option")
    with _store() as session:
        if session.get(Pool, name) is None:
            raise click.ClickException(f"no pool '{name}'; add it with `relaytune pools add`")
        upsert_pool(session, name, changes)
        _print_pools(session)


@pools.command("add")
@click.argument("name")
@_pool_options
def pools_add(name: str, **options: Any) -> None:
    """Add pool NAME (needs --gpu-model, --memory-gb and --price); a job can then name it."""
    from orchestrator.models import Pool
    from orchestrator.pools import upsert_pool

    changes = _pool_changes(options)
    with _store() as session:
        if session.get(Pool, name) is not None:
            raise click.ClickException(
                f"pool '{name}' exists; change it with `relaytune pools set`")
        upsert_pool(session, name, changes)
        _print_pools(session)


@pools.command("apply")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def pools_apply(path: Path) -> None:
    """Create or update the pools listed in a YAML or JSON file (RELAYTUNE_POOLS_FILE format)."""
    from orchestrator.pools import apply_pools_file

    with _store() as session:
        apply_pools_file(session, path)
        _print_pools(session)


@click.group()
def tenants() -> None:
    """Tenants and their spending limits."""


def _print_tenants(session: Session) -> None:
    from orchestrator import budgets, repository

    table = Table(title="tenants")
    for column in ("name", "spending limit", "period", "spent in period"):
        table.add_column(column)
    currency = budgets.currency(session)
    for tenant in repository.tenants(session):
        spent = budgets.tenant_spent(session, tenant)
        limit = (f"{tenant.spending_limit} {currency}" if tenant.spending_limit is not None
                 else "none")
        period = f"{tenant.spending_period_days} days" if tenant.spending_period_days else "-"
        table.add_row(tenant.name, limit, period, f"{spent} {currency}")
    console.print(table)


@tenants.command("list")
def tenants_list() -> None:
    """Every tenant with its spending limit and what it spent in the period."""
    with _store() as session:
        _print_tenants(session)


@tenants.command("set-limit")
@click.argument("name")
@click.option("--amount", type=Decimal, required=True, help="Most the tenant may spend per period.")
@click.option("--days", type=int, default=30, show_default=True, help="Length of the period.")
def tenants_set_limit(name: str, amount: Decimal, days: int) -> None:
    """Cap what tenant NAME's jobs may cost over the last DAYS days."""
    from orchestrator import budgets

    with _store() as session:
        budgets.set_spending_limit(session, name, amount=amount, period_days=days)
        _print_tenants(session)


@tenants.command("clear-limit")
@click.argument("name")
def tenants_clear_limit(name: str) -> None:
    """Remove tenant NAME's spending limit."""
    from orchestrator import budgets

    with _store() as session:
        budgets.set_spending_limit(session, name, amount=None, period_days=None)
        _print_tenants(session)


@click.command()
@click.option("--grace-hours", type=click.FloatRange(min=0), default=None,
              help="Leave objects younger than this (default RELAYTUNE_SWEEP_GRACE_SECONDS).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def sweep(grace_hours: float | None, dry_run: bool) -> None:
    """Delete stored objects of jobs that no row of the job store points to."""
    from datetime import timedelta

    from orchestrator.models import utcnow
    from orchestrator.settings import get_settings
    from orchestrator.storage import get_store
    from orchestrator.sweep import sweep as sweep_orphans

    grace = (timedelta(hours=grace_hours) if grace_hours is not None
             else timedelta(seconds=get_settings().sweep_grace_seconds))
    with _store() as session:
        result = sweep_orphans(session, get_store(), grace=grace, now=utcnow(), dry_run=dry_run)
    for key in result.deleted:
        console.print(key, highlight=False)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(result.deleted)} orphaned objects; {result.kept} kept")
