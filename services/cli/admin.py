"""Operator commands that talk to the job store directly: API keys, pools and tenants'
spending limits. Keys, prices and limits change here, not in code."""

from __future__ import annotations

import os
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
    "price": "hourly_price",
    "currency": "currency",
    "gpu_model": "gpu_model",
    "memory_gb": "gpu_memory_gb",
    "bf16": "supports_bf16",
    "queue": "queue",
    "peak_tflops": "peak_tflops",
    "memory_bandwidth_gbs": "memory_bandwidth_gbs",
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
    for decorator in reversed(
        [
            click.option("--price", type=Decimal, help="Hourly price in the pools' currency."),
            click.option("--currency", help="ISO 4217 code, the same for every pool."),
            click.option("--gpu-model", help='e.g. "NVIDIA H100".'),
            click.option("--memory-gb", type=int, help="GPU memory in GiB."),
            click.option("--bf16/--no-bf16", default=None, help="Whether the GPU supports bf16."),
            click.option("--queue", help="Celery queue of the pool's workers (default gpu.NAME)."),
            click.option("--peak-tflops", type=float, help="Datasheet dense 16-bit TFLOP/s."),
            click.option("--memory-bandwidth-gbs", type=float, help="Memory bandwidth in GB/s."),
        ]
    ):
        command = decorator(command)
    return command


def _print_pools(session: Session) -> None:
    from orchestrator import repository
    from orchestrator.pools import pool_queue

    table = Table(title="pools")
    for column in ("name", "queue", "gpu", "memory", "bf16", "TFLOP/s", "GB/s", "price / h"):
        table.add_column(column)
    for p in repository.pools(session):
        table.add_row(
            p.name,
            pool_queue(p),
            p.gpu_model,
            f"{p.gpu_memory_gb} GiB",
            "yes" if p.supports_bf16 else "no",
            f"{p.peak_tflops:g}",
            f"{p.memory_bandwidth_gbs:g}",
            f"{p.hourly_price} {p.currency}",
        )
    console.print(table)


@click.group("api-key")
def api_key() -> None:
    """Create, list and revoke API keys (the keys themselves are shown only at creation)."""


def _expires_in(_: Any, __: Any, value: str | None) -> Any:
    from orchestrator.auth import parse_duration
    from orchestrator.errors import InvalidRequest

    if value is None:
        return None
    try:
        return parse_duration(value, param="--expires-in")
    except InvalidRequest as exc:
        raise click.BadParameter(exc.message) from exc


@api_key.command("create")
@click.option("--tenant", required=True, help="Tenant name; created if new.")
@click.option("--admin", is_flag=True, help="May also manage pools, spending limits and keys.")
@click.option(
    "--expires-in",
    callback=_expires_in,
    help="Lifetime: a number and a unit (s, m, h, d, w), like 30d. Default: never.",
)
@click.option(
    "--if-none",
    is_flag=True,
    help="Create the key only if no active admin key exists (with --admin): a deployment's "
    "first start creates one, every later start none.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the key into this file (readable by its owner only) instead of printing it.",
)
def api_key_create(
    tenant: str, admin: bool, expires_in: Any, if_none: bool, output: Path | None
) -> None:
    """Print a new API key for TENANT (stored hashed; shown only now)."""
    from orchestrator.auth import SHOWN_PREFIX_LENGTH, create_api_key

    if if_none and not admin:
        raise click.UsageError("--if-none bootstraps an admin key: give --admin too")
    with _store() as session:
        existing = _active_admin_key(session) if if_none else None
        if existing is not None:
            # On stderr: stdout stays empty, so a script that captures the key gets none.
            click.echo(
                f"an active admin key exists ({existing.prefix}… of tenant "
                f"{existing.tenant.name}); none created",
                err=True,
            )
            return
        key = create_api_key(session, tenant, admin=admin, expires_in=expires_in)
        if output is not None:
            # Written before the transaction commits: a key that cannot be written is not kept.
            _write_secret(output, key)
    if output is None:
        click.echo(key)
    else:
        shown = key[:SHOWN_PREFIX_LENGTH]
        click.echo(f"API key {shown}… of tenant {tenant} written to {output}", err=True)


def _active_admin_key(session: Session) -> Any:
    from orchestrator import repository
    from orchestrator.auth import key_status

    keys = repository.api_keys(session)
    return next((k for k in keys if k.is_admin and key_status(k) == "active"), None)


def _write_secret(path: Path, secret: str) -> None:
    """Replace PATH with SECRET atomically, never readable by anyone but the owner."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    partial.replace(path)


def _when(moment: Any) -> str:
    from orchestrator.cost import as_utc

    return as_utc(moment).strftime("%Y-%m-%d %H:%M:%SZ") if moment is not None else "-"


@api_key.command("list")
@click.option("--tenant", default=None, help="Only this tenant's keys.")
def api_key_list(tenant: str | None) -> None:
    """Every key (revoked and expired ones too), newest first; never the key itself."""
    from orchestrator.auth import key_status, list_api_keys

    table = Table(title="API keys")
    for column in ("id", "prefix", "tenant", "admin", "created", "expires", "revoked", "status"):
        table.add_column(column)
    with _store() as session:
        for key in list_api_keys(session, tenant):
            table.add_row(
                key.id,
                f"{key.prefix}…",
                key.tenant.name,
                "yes" if key.is_admin else "no",
                _when(key.created_at),
                _when(key.expires_at),
                _when(key.revoked_at),
                key_status(key),
            )
    console.print(table)


@api_key.command("revoke")
@click.argument("prefix_or_id")
def api_key_revoke(prefix_or_id: str) -> None:
    """Revoke the key with this id or prefix (as `api-key list` shows them) at once."""
    from orchestrator.auth import find_api_key, revoke_api_key

    with _store() as session:
        key = find_api_key(session, prefix_or_id)
        already = key.revoked_at is not None
        revoke_api_key(session, key)
        done = "was already revoked at" if already else "revoked at"
        console.print(
            f"key {key.prefix}… of tenant {key.tenant.name} ({key.id}) "
            f"{done} {_when(key.revoked_at)}",
            highlight=False,
        )


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
                f"pool '{name}' exists; change it with `relaytune pools set`"
            )
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
        limit = (
            f"{tenant.spending_limit} {currency}" if tenant.spending_limit is not None else "none"
        )
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
@click.option(
    "--grace-hours",
    type=click.FloatRange(min=0),
    default=None,
    help="Leave objects younger than this (default RELAYTUNE_SWEEP_GRACE_SECONDS).",
)
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
def sweep(grace_hours: float | None, dry_run: bool) -> None:
    """Delete stored objects of jobs that no row of the job store points to."""
    from datetime import timedelta

    from orchestrator.models import utcnow
    from orchestrator.settings import get_settings
    from orchestrator.storage import get_store
    from orchestrator.sweep import sweep as sweep_orphans

    grace = (
        timedelta(hours=grace_hours)
        if grace_hours is not None
        else timedelta(seconds=get_settings().sweep_grace_seconds)
    )
    with _store() as session:
        result = sweep_orphans(session, get_store(), grace=grace, now=utcnow(), dry_run=dry_run)
    for key in result.deleted:
        console.print(key, highlight=False)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(result.deleted)} orphaned objects; {result.kept} kept")
