"""One reaper and one sweep across API replicas.

Every API process runs the background rounds (orchestrator/reaper.py, orchestrator/sweep.py) on
an interval. Two replicas reaping the same expired lease at once would both re-queue it, so a
round runs only in the transaction that takes its PostgreSQL advisory lock; a replica that finds
it taken skips the round. The lock is transaction-scoped: it is released by the round's commit
or rollback, also when the replica dies mid-round. SQLite serves one machine's processes, whose
writes it serialises itself, so there every round runs.
"""

from __future__ import annotations

from enum import IntEnum

from sqlalchemy import text
from sqlalchemy.orm import Session


class Round(IntEnum):
    """Advisory lock keys: any constants, distinct per round ("reap", "swep", "hook" in ASCII)."""

    REAPER = 0x72656170
    SWEEP = 0x73776570
    WEBHOOKS = 0x686F6F6B


def take_round(session: Session, round_: Round) -> bool:
    """True when this transaction may run the round: no other one is running it now."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    taken = session.scalar(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": int(round_)})
    return bool(taken)
