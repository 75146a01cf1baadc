"""SQL tables. The store is the truth: Celery deliveries only point at rows here."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from orchestrator.db import Base


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Optional cap on what the tenant's jobs may cost over a rolling period.
    spending_limit: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    spending_period_days: Mapped[int | None] = mapped_column(Integer)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(16))
    # sha256 of the whole key: keys are long random strings, so a slow hash adds nothing.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # None: the key never expires. An expired or revoked key is kept, so it can be named in
    # the 401 it gets and listed.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Admin keys may change pool prices and manage keys; ordinary keys see their tenant only.
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)

    tenant: Mapped[Tenant] = relationship()


class Pool(Base):
    __tablename__ = "pools"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    gpu_model: Mapped[str] = mapped_column(String(64))
    gpu_memory_gb: Mapped[int] = mapped_column(Integer)
    hourly_price: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    currency: Mapped[str] = mapped_column(String(3))
    queue: Mapped[str] = mapped_column(String(64), default="")
    supports_bf16: Mapped[bool] = mapped_column(Boolean, default=True)
    # Datasheet dense 16-bit tensor TFLOP/s and memory bandwidth (GB/s): they scale a profile
    # measured on one GPU to another ("derived" profiles).
    peak_tflops: Mapped[float] = mapped_column(Float, default=0.0)
    memory_bandwidth_gbs: Mapped[float] = mapped_column(Float, default=0.0)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    format: Mapped[str] = mapped_column(String(32))
    num_samples: Mapped[int] = mapped_column(Integer)
    num_images: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id"))
    # A second data set used whole as the held-out set; None: hold out part of dataset_id.
    validation_dataset_id: Mapped[str | None] = mapped_column(ForeignKey("datasets.id"))
    base_model: Mapped[str] = mapped_column(String(512))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    job_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    error_param: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Spending cap for the whole job, in the pools' currency; None means no cap.
    max_cost: Mapped[Decimal | None] = mapped_column(Numeric(14, 6))
    # Which plan ran the job and why (the planner's choice for pools "auto", else "requested").
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The output of the last final phase that succeeded: the adapter served, kept while the
    # final phase runs again so a requeue never takes a good adapter away.
    adapter_key: Mapped[str | None] = mapped_column(String(512))

    phases: Mapped[list[Phase]] = relationship(
        back_populates="job", order_by="Phase.position", cascade="all, delete-orphan"
    )
    # Every run's timing row, oldest first; written only through orchestrator.timings.
    timings: Mapped[list[PhaseTiming]] = relationship(order_by="PhaseTiming.id", viewonly=True)


class Phase(Base):
    __tablename__ = "phases"
    __table_args__ = (UniqueConstraint("job_id", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(32))
    position: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(ForeignKey("pools.name"))
    status: Mapped[str] = mapped_column(String(16), index=True)
    # Fencing token: bumped on every queueing; every write of a run carries it.
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(255))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # The run's last sign of life (claim, heartbeat, progress): a run whose lease expired is
    # billed up to here, not up to when the reaper noticed.
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the current attempt's message was last handed to the broker, and how many times:
    # the reaper re-sends only a message that is not waiting in its queue, with backoff.
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    sends: Mapped[int] = mapped_column(Integer, default=0)
    handbacks: Mapped[int] = mapped_column(Integer, default=0)  # runs a stopping worker returned
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    # Seconds of GPU time already billed by finished or reaped runs of this phase.
    billed_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    cost_amount: Mapped[Decimal] = mapped_column(Numeric(14, 6), default=Decimal(0))
    output_key: Mapped[str | None] = mapped_column(String(512))
    # Latest checkpoint a re-run of this phase continues from (after a lost lease, say);
    # cleared when the user requeues the phase, which starts it over from its input.
    resume_key: Mapped[str | None] = mapped_column(String(512))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    queued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # What the estimator predicted for this phase at submit (seconds by component, cost).
    estimate: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    job: Mapped[Job] = relationship(back_populates="phases")
    pool_ref: Mapped[Pool] = relationship()


class Worker(Base):
    """A worker process last seen consuming these queues (comma-joined): a queued phase whose
    queue no worker was seen on lately is shown as waiting for a worker."""

    __tablename__ = "workers"

    hostname: Mapped[str] = mapped_column(String(255), primary_key=True)
    queues: Mapped[str] = mapped_column(String(1000), default="")
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str | None] = mapped_column(String(32))
    attempt: Mapped[int | None] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("job_id", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[int] = mapped_column(Integer, default=0)
    key: Mapped[str] = mapped_column(String(512))
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class PhaseTiming(Base):
    """Where one run (attempt) of a phase spent its time; the learned profiles read these.

    The components run from claim to release and add up to the billed seconds: `other_s` is
    what no named component covers (job-store writes, scratch clean-up)."""

    __tablename__ = "phase_timings"
    __table_args__ = (UniqueConstraint("job_id", "phase", "attempt"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    phase: Mapped[str] = mapped_column(String(32))
    attempt: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))  # the phase status the run ended in
    worker_id: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(128))
    precision: Mapped[str | None] = mapped_column(String(8))
    model_key: Mapped[str | None] = mapped_column(String(128))
    lora_targets: Mapped[str | None] = mapped_column(String(64))
    micro_batch: Mapped[int | None] = mapped_column(Integer)
    queue_wait_s: Mapped[float] = mapped_column(Float, default=0.0)
    startup_s: Mapped[float] = mapped_column(Float, default=0.0)
    model_fetch_s: Mapped[float] = mapped_column(Float, default=0.0)
    model_cache_hit: Mapped[bool | None] = mapped_column(Boolean)
    input_download_s: Mapped[float] = mapped_column(Float, default=0.0)
    train_s: Mapped[float] = mapped_column(Float, default=0.0)
    evaluate_s: Mapped[float] = mapped_column(Float, default=0.0)
    export_s: Mapped[float] = mapped_column(Float, default=0.0)
    checkpoint_upload_s: Mapped[float] = mapped_column(Float, default=0.0)
    other_s: Mapped[float] = mapped_column(Float, default=0.0)
    billed_s: Mapped[float] = mapped_column(Float, default=0.0)
    samples: Mapped[int] = mapped_column(Integer, default=0)
    tokens: Mapped[int] = mapped_column(BigInteger, default=0)
    validation_samples: Mapped[int] = mapped_column(Integer, default=0)
    checkpoints: Mapped[int] = mapped_column(Integer, default=0)
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    peak_memory_bytes: Mapped[int | None] = mapped_column(BigInteger)
    fused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class IdempotencyKey(Base):
    """The first successful result of a request sent with an `Idempotency-Key` header, written
    in the transaction that created its job or data set: a retry gets this result back."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "route", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(255))
    route: Mapped[str] = mapped_column(String(64))  # e.g. "POST /v1/jobs"
    # sha256 of what the request asked for: a reuse of the key for another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response_body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, index=True
    )


class RegisteredModel(Base):
    """A base model stored once in the object store under its content digest
    (layout.model_prefix), which jobs name by `name`."""

    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    # sha256 over the sorted (path, file sha256) list: two directories with the same files
    # share one stored copy.
    digest: Mapped[str] = mapped_column(String(64), index=True)
    architecture: Mapped[str] = mapped_column(String(200))
    parameter_count: Mapped[int] = mapped_column(BigInteger)
    dtype: Mapped[str] = mapped_column(String(32))
    total_bytes: Mapped[int] = mapped_column(BigInteger)
    # [{"path", "sha256", "bytes"}], sorted by path
    files: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    lora_target_modules: Mapped[list[str]] = mapped_column(JSON)
    # config.json and the image processor's settings: submit checks jobs against them
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    processor: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Webhook(Base):
    """A URL that receives a tenant's job events, signed with `secret` (orchestrator.webhooks).
    `job_id` narrows it to one job, `event_types` to some types (None: every type)."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    # Kept in clear: signing needs it, unlike an API key, which is only ever compared.
    secret: Mapped[str] = mapped_column(String(128))
    event_types: Mapped[list[str] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event owed to one webhook: written with the event (an outbox), sent after commit."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    webhook_id: Mapped[str] = mapped_column(
        ForeignKey("webhooks.id", ondelete="CASCADE"), index=True
    )
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"), index=True)
    # pending (next_attempt_at says when), delivered, or failed (no attempt left)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    # A relationship, so that the event's insert (and its id) comes first in the same flush.
    event: Mapped[Event] = relationship()
    webhook: Mapped[Webhook] = relationship()
    tries: Mapped[list[WebhookAttempt]] = relationship(
        order_by="WebhookAttempt.attempt", cascade="all, delete-orphan"
    )


class WebhookAttempt(Base):
    """One POST of a delivery and what came of it."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # When the delivery is tried again after this attempt; None: delivered or given up.
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
