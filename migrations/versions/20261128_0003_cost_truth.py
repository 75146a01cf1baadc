"""Cost truth: pools described as data, per-run phase timings, budgets, plans and estimates.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)

# Datasheet figures of the seeded pools' GPUs: dense 16-bit tensor rate (fp16 on a T4, which
# has no bf16) and memory bandwidth. They scale measured throughput to GPUs never measured.
POOL_FACTS = {
    "t4": {"supports_bf16": False, "peak_tflops": 65.0, "memory_bandwidth_gbs": 320.0},
    "a10": {"supports_bf16": True, "peak_tflops": 125.0, "memory_bandwidth_gbs": 600.0},
    "a100": {"supports_bf16": True, "peak_tflops": 312.0, "memory_bandwidth_gbs": 2039.0},
}


def upgrade() -> None:
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("queue", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("supports_bf16", sa.Boolean, nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("peak_tflops", sa.Float, nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("memory_bandwidth_gbs", sa.Float, nullable=False, server_default="0")
        )
    pools = sa.table(
        "pools",
        sa.column("name", sa.String),
        sa.column("queue", sa.String),
        sa.column("supports_bf16", sa.Boolean),
        sa.column("peak_tflops", sa.Float),
        sa.column("memory_bandwidth_gbs", sa.Float),
    )
    op.execute(pools.update().values(queue=sa.literal("gpu.") + pools.c.name))
    for name, facts in POOL_FACTS.items():
        op.execute(pools.update().where(pools.c.name == name).values(**facts))

    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("is_admin", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("spending_limit", sa.Numeric(14, 6)))
        batch.add_column(sa.Column("spending_period_days", sa.Integer))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("max_cost", sa.Numeric(14, 6)))
        batch.add_column(sa.Column("plan", sa.JSON))
    with op.batch_alter_table("phases") as batch:
        batch.add_column(sa.Column("estimate", sa.JSON))

    op.create_table(
        "phase_timings",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "job_id",
            sa.String(36),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
            index=True,
        ),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("pool", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("worker_id", sa.String(255)),
        sa.Column("device", sa.String(128)),
        sa.Column("precision", sa.String(8)),
        sa.Column("model_key", sa.String(128)),
        sa.Column("lora_targets", sa.String(64)),
        sa.Column("micro_batch", sa.Integer),
        sa.Column("queue_wait_s", sa.Float, nullable=False),
        sa.Column("startup_s", sa.Float, nullable=False),
        sa.Column("input_download_s", sa.Float, nullable=False),
        sa.Column("train_s", sa.Float, nullable=False),
        sa.Column("evaluate_s", sa.Float, nullable=False),
        sa.Column("export_s", sa.Float, nullable=False),
        sa.Column("checkpoint_upload_s", sa.Float, nullable=False),
        sa.Column("other_s", sa.Float, nullable=False),
        sa.Column("billed_s", sa.Float, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("validation_samples", sa.Integer, nullable=False),
        sa.Column("checkpoints", sa.Integer, nullable=False),
        sa.Column("input_bytes", sa.BigInteger, nullable=False),
        sa.Column("peak_memory_bytes", sa.BigInteger),
        sa.Column("fused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", TZ, nullable=False),
        sa.UniqueConstraint("job_id", "phase", "attempt"),
    )
    op.create_index(
        "ix_phase_timings_profile", "phase_timings", ["phase", "pool", "model_key", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_phase_timings_profile", table_name="phase_timings")
    op.drop_table("phase_timings")
    with op.batch_alter_table("phases") as batch:
        batch.drop_column("estimate")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("plan")
        batch.drop_column("max_cost")
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("spending_period_days")
        batch.drop_column("spending_limit")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("is_admin")
    with op.batch_alter_table("pools") as batch:
        for column in ("memory_bandwidth_gbs", "peak_tflops", "supports_bf16", "queue"):
            batch.drop_column(column)
