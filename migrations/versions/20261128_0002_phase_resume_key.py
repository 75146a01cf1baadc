"""A phase remembers its latest resumable checkpoint, so a re-run continues from it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("phases") as batch:
        batch.add_column(sa.Column("resume_key", sa.String(512)))


def downgrade() -> None:
    with op.batch_alter_table("phases") as batch:
        batch.drop_column("resume_key")
