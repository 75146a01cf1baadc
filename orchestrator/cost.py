"""GPU cost: seconds a phase held its pool's GPU, times the pool's hourly price.

Each run is priced when it ends, at the pool's price of that moment, and added to the phase's
stored cost: a later price change leaves runs already billed alone. The meter of a run still
in progress shows its seconds so far at the current price.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal

from orchestrator.lifecycle import PhaseStatus
from orchestrator.models import Phase, Pool

MICRO = Decimal("0.000001")


def as_utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes even for timezone-aware columns; they are UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def price(seconds: float, hourly_price: Decimal) -> Decimal:
    """What `seconds` of a GPU cost at `hourly_price`, to the micro-unit."""
    amount = Decimal(str(seconds)) * Decimal(hourly_price) / Decimal(3600)
    return amount.quantize(MICRO, rounding=ROUND_HALF_UP)


def price_of(seconds: float, pool: Pool) -> Decimal:
    return price(seconds, pool.hourly_price)


def meter_end(phase: Phase, now: datetime) -> datetime:
    """Where the meter of a running phase stands: now, or, once its lease has expired (the
    worker stopped renewing it), the run's last heartbeat: a dead worker is not billed."""
    if (
        phase.lease_expires_at is not None
        and as_utc(phase.lease_expires_at) <= now
        and phase.heartbeat_at is not None
    ):
        return min(now, as_utc(phase.heartbeat_at))
    return now


def running_seconds(phase: Phase, now: datetime) -> float:
    if phase.status == PhaseStatus.RUNNING and phase.started_at is not None:
        return max(0.0, (meter_end(phase, now) - as_utc(phase.started_at)).total_seconds())
    return 0.0


def phase_cost(phase: Phase, pool: Pool, now: datetime) -> Decimal:
    """Billed runs plus the run in progress, so a watcher sees the meter move."""
    return Decimal(phase.cost_amount or 0) + price_of(running_seconds(phase, now), pool)


def close_meter(phase: Phase, pool: Pool, now: datetime) -> float:
    """Call while the phase is still running: bills the current run at today's price and adds
    it to the phase's cost; returns the seconds billed for this run (claim to now, or to its
    last heartbeat when its lease expired)."""
    seconds = running_seconds(phase, now)
    phase.billed_seconds = float(phase.billed_seconds or 0.0) + seconds
    phase.cost_amount = Decimal(phase.cost_amount or 0) + price_of(seconds, pool)
    return seconds
