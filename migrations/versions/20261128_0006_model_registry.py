"""Registered models: base models stored once in the object store, named by jobs.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("architecture", sa.String(200), nullable=False),
        sa.Column("parameter_count", sa.BigInteger, nullable=False),
        sa.Column("dtype", sa.String(32), nullable=False),
        sa.Column("total_bytes", sa.BigInteger, nullable=False),
        sa.Column("files", sa.JSON, nullable=False),
        sa.Column("lora_target_modules", sa.JSON, nullable=False),
        sa.Column("config", sa.JSON, nullable=False),
        sa.Column("processor", sa.JSON),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_models_digest", "models", ["digest"])


def downgrade() -> None:
    op.drop_index("ix_models_digest", table_name="models")
    op.drop_table("models")
