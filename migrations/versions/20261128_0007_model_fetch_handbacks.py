"""Model fetch time on the phase clock, and hand-backs kept apart from attempts.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Seconds a run spent making its base model local (download and hash check on a miss,
    # a lock and a look on a hit), and whether the worker's cache already held it.
    op.add_column(
        "phase_timings",
        sa.Column("model_fetch_s", sa.Float, nullable=False, server_default="0"),
    )
    op.add_column("phase_timings", sa.Column("model_cache_hit", sa.Boolean, nullable=True))
    # Runs handed back by a stopping worker (SIGTERM): they raise the attempt number, the
    # fencing token, but do not use up the phase's attempts.
    op.add_column("phases", sa.Column("handbacks", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("phases", "handbacks")
    op.drop_column("phase_timings", "model_cache_hit")
    op.drop_column("phase_timings", "model_fetch_s")
