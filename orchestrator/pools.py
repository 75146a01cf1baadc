"""GPU pools as data: what each pool is, where its work is queued, and what an hour costs.

Operators change pools through the CLI, the admin API or a pools file read at start; no code
change is needed to add a pool (say h100) or reprice one. Every pool bills in one currency, so
that a job's phases, its budget and a tenant's limit add up.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)
from sqlalchemy.orm import Session

from orchestrator import read_cache, repository
from orchestrator.dispatch import default_queue
from orchestrator.errors import InvalidRequest
from orchestrator.models import Pool

POOL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
DEFAULT_CURRENCY = "CNY"

PoolName = Annotated[str, StringConstraints(pattern=POOL_NAME_PATTERN)]
Currency = Annotated[
    str,
    BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    StringConstraints(pattern=r"^[A-Z]{3}$"),
]


class PoolChanges(BaseModel):
    """Fields of a pool to set; those left out keep their value (or their default, when new)."""

    model_config = ConfigDict(extra="forbid")

    queue: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")] | None = Field(
        None, description="Celery queue its workers listen on; default gpu.<name>"
    )
    gpu_model: (
        Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)] | None
    ) = None
    gpu_memory_gb: int | None = Field(None, ge=1, le=4096, description="GPU memory in GiB")
    supports_bf16: bool | None = None
    hourly_price: Decimal | None = Field(
        None, ge=0, max_digits=12, decimal_places=4, allow_inf_nan=False
    )
    currency: Currency | None = Field(None, description="ISO 4217 code, e.g. CNY")
    peak_tflops: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Datasheet dense 16-bit TFLOP/s"
    )
    memory_bandwidth_gbs: float | None = Field(None, ge=0, allow_inf_nan=False)


class PoolEntry(PoolChanges):
    """One pool of a pools file: its name and its fields."""

    name: PoolName


# What a new pool must state; everything else has a default.
REQUIRED_FOR_NEW = ("gpu_model", "gpu_memory_gb", "hourly_price")


def check_name(name: str) -> str:
    if not re.fullmatch(POOL_NAME_PATTERN, name):
        raise InvalidRequest(
            f"pool name '{name}' must be 1-32 lower-case letters, digits, '-' or '_'",
            param="name",
        )
    return name


def pool_queue(pool: Pool) -> str:
    """The queue a stored pool's workers listen on."""
    return pool.queue or default_queue(pool.name)


def queue_of(session: Session, name: str) -> str:
    """The queue a pool's workers listen on; the default one for a pool the store does not
    know."""
    pool = session.get(Pool, name)
    return pool_queue(pool) if pool is not None else default_queue(name)


def upsert_pool(
    session: Session, name: str, changes: PoolChanges, *, check_currency: bool = True
) -> tuple[Pool, bool]:
    """Create or update a pool; returns (pool, created)."""
    check_name(name)
    fields = changes.model_dump(exclude_none=True)
    pool = session.get(Pool, name)
    created = pool is None
    if pool is None:
        missing = [f for f in REQUIRED_FOR_NEW if f not in fields]
        if missing:
            raise InvalidRequest(
                f"pool '{name}' is new: {', '.join(missing)} must be given",
                param=missing[0],
                code="missing_field",
            )
        pool = Pool(
            name=name,
            queue=default_queue(name),
            supports_bf16=True,
            peak_tflops=0.0,
            memory_bandwidth_gbs=0.0,
            currency=_house_currency(session),
        )
        session.add(pool)
    for field, value in fields.items():
        setattr(pool, field, value)
    session.flush()
    read_cache.clear_after_commit(session)  # job reads show the new price at once
    session.refresh(pool)  # the stored values (e.g. the price at the column's scale)
    if check_currency:
        check_one_currency(session)
    return pool, created


def _house_currency(session: Session) -> str:
    currencies = {p.currency for p in repository.pools(session)}
    return next(iter(currencies)) if len(currencies) == 1 else DEFAULT_CURRENCY


def check_one_currency(session: Session) -> None:
    by_currency: dict[str, list[str]] = {}
    for pool in repository.pools(session):
        by_currency.setdefault(pool.currency, []).append(pool.name)
    if len(by_currency) > 1:
        listing = "; ".join(f"{c}: {', '.join(sorted(n))}" for c, n in sorted(by_currency.items()))
        raise InvalidRequest(
            "every pool must bill in one currency (job costs, budgets and spending limits add "
            f"them up); pools would be in {listing}. Change all pools at once with a pools file",
            param="currency",
            code="currency_mismatch",
        )


def read_pools_file(path: Path) -> list[PoolEntry]:
    """A YAML or JSON list of pools (each `name` plus the fields of PoolChanges)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise InvalidRequest(f"pools file {path}: {exc.strerror}", param=str(path)) from exc
    try:
        raw: Any = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as exc:
        raise InvalidRequest(f"pools file {path} is not valid: {exc}", param=str(path)) from exc
    if isinstance(raw, dict) and "pools" in raw:
        raw = raw["pools"]
    if not isinstance(raw, list):
        raise InvalidRequest(f"pools file {path} must hold a list of pools", param=str(path))
    entries = []
    for index, item in enumerate(raw):
        try:
            entries.append(PoolEntry.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "item"
            label = item.get("name", index) if isinstance(item, dict) else index
            raise InvalidRequest(
                f"pools file {path}, pool {label}: {where}: {first['msg']}",
                param=f"{path}[{index}].{where}",
            ) from exc
    return entries


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from exc


def apply_pools(session: Session, entries: list[PoolEntry]) -> list[tuple[Pool, bool]]:
    """Upsert every entry, then check the currency once: a file may switch all pools at once."""
    results = [
        upsert_pool(
            session,
            entry.name,
            PoolChanges.model_validate(entry.model_dump(exclude={"name"}, exclude_none=True)),
            check_currency=False,
        )
        for entry in entries
    ]
    check_one_currency(session)
    return results


def apply_pools_file(session: Session, path: Path) -> list[tuple[Pool, bool]]:
    return apply_pools(session, read_pools_file(path))
