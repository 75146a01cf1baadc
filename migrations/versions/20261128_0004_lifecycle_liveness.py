"""Liveness and delivery facts: a run's last heartbeat, when a phase's message was last sent,
the adapter a job serves, and which workers were last seen on which queues.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("phases") as batch:
        batch.add_column(sa.Column("heartbeat_at", TZ))
        batch.add_column(sa.Column("sent_at", TZ))
        batch.add_column(sa.Column("sends", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("adapter_key", sa.String(512)))
    # A job whose final phase already succeeded serves that phase's output.
    op.execute(
        "UPDATE jobs SET adapter_key = (SELECT output_key FROM phases WHERE phases.job_id = "
        "jobs.id AND phases.name = 'final' AND phases.status = 'succeeded')"
    )
    op.create_table(
        "workers",
        sa.Column("hostname", sa.String(255), primary_key=True),
        sa.Column("queues", sa.String(1000), nullable=False, server_default=""),
        sa.Column("last_seen_at", TZ, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("workers")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("adapter_key")
    with op.batch_alter_table("phases") as batch:
        for column in ("sends", "sent_at", "heartbeat_at"):
            batch.drop_column(column)
