"""A job may name a second data set, used whole as its validation set.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

FOREIGN_KEY = "fk_jobs_validation_dataset_id_datasets"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # SQLite takes a reference inline in ADD COLUMN; Alembic's way (a batch rebuild of
        # the table) would drop jobs, which with foreign keys on cascades to its phases.
        op.execute(
            "ALTER TABLE jobs ADD COLUMN validation_dataset_id VARCHAR(36) "
            f"CONSTRAINT {FOREIGN_KEY} REFERENCES datasets (id)"
        )
        return
    op.add_column(
        "jobs",
        sa.Column(
            "validation_dataset_id",
            sa.String(36),
            sa.ForeignKey("datasets.id", name=FOREIGN_KEY),
            nullable=True,
        ),
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(FOREIGN_KEY, "jobs", type_="foreignkey")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("validation_dataset_id")
