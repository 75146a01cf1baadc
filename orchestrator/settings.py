"""One settings object for every process; `RELAYTUNE_*` environment variables override it."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The default base model: a tiny random Qwen3-VL that `relaytune make-tiny-model` writes.
TINY_MODEL_NAME = "tiny-qwen3-vl"
# A derived heartbeat is a quarter of the lease (three beats may be missed before it runs
# out), but never rarer than this.
MAX_DERIVED_HEARTBEAT_SECONDS = 30.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELAYTUNE_", env_file=".env", extra="ignore")

    environment: str = "development"
    data_dir: Path = Path(".relaytune")
    # Empty means "derive from data_dir": SQLite, local object store, tiny base model.
    database_url: str = ""
    broker_url: str = "redis://127.0.0.1:6379/0"
    s3_endpoint: str = ""
    s3_bucket: str = "relaytune"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_region: str = "us-east-1"
    # Attempts per S3 request (the first included), with exponential backoff between them;
    # a request that fails every one fails the phase with an error naming the store.
    s3_max_attempts: int = Field(default=5, ge=1, le=20)
    # Per request: how long to wait for a connection, and for each answer once connected.
    s3_connect_timeout_seconds: float = Field(default=5.0, gt=0)
    s3_read_timeout_seconds: float = Field(default=30.0, gt=0)
    # Base models a job may name (orchestrator/base_models.py): the default, any directory
    # under model_root (default <data_dir>/models), and the allowed names, comma-separated
    # (hub ids in the workers' cache, or directories elsewhere).
    default_base_model: str = TINY_MODEL_NAME
    model_root: Path | None = None
    allowed_models: Annotated[list[str], NoDecode] = []
    # Workers load models with the Hugging Face hub offline unless this is set.
    allow_hub_downloads: bool = False
    # A YAML or JSON list of pools, upserted into the store when the API or `up` starts.
    pools_file: Path | None = None

    # GET /metrics answers an admin API key, or this token (for a Prometheus scrape config's
    # bearer token) when set: the totals span every tenant.
    metrics_token: SecretStr | None = None

    # Request bodies: a data set upload, and every other (JSON) body. Larger ones get a 413
    # before they are read.
    max_upload_bytes: int = 200 * 1024 * 1024
    max_json_body_bytes: int = 1024 * 1024
    max_images: int = 1000
    # What an uploaded zip may expand to, counted on the bytes inflated (headers can lie).
    max_dataset_members: int = 10_000
    max_dataset_member_bytes: int = 64 * 1024**2
    max_data_file_bytes: int = 64 * 1024**2
    max_dataset_bytes: int = 512 * 1024**2
    max_image_pixels: int = 4096 * 4096
    # A running phase renews its lease every heartbeat; the reaper re-queues it after expiry.
    # A heartbeat of 0 is derived from the lease; a set one must be at most half of it.
    lease_seconds: int = Field(default=120, ge=1)
    heartbeat_seconds: float = Field(default=0.0, ge=0)
    max_attempts: int = 3
    # A worker told to stop (SIGTERM) gives its running phase this long to checkpoint and be
    # handed back; then the phase's process is killed and the lease expiry re-queues it.
    shutdown_grace_seconds: float = Field(default=60.0, ge=0)
    # A worker that finishes a phase runs the next one itself when it is queued on the same
    # pool: one process, one model load, no storage round trip between them.
    fuse_same_pool_phases: bool = True
    reaper_interval_seconds: float = 30.0
    # Expired runs re-queued per reaper transaction: a mass expiry (a pool's workers all gone)
    # is handled in several short transactions, each sending its phases as it commits.
    reaper_batch_size: int = Field(default=100, ge=1)
    # Objects under jobs/ that no row points to (lost attempts, half-written checkpoints) are
    # deleted once older than the grace period, by a sweep this often (0: only `relaytune sweep`).
    sweep_interval_seconds: float = 3600.0
    sweep_grace_seconds: int = 24 * 3600
    # How often the API sends the webhook deliveries that are due (0: never).
    webhook_interval_seconds: float = 1.0
    # Webhooks never send to loopback, private, link-local (cloud metadata), multicast, shared
    # or reserved addresses, except those in these networks (comma-separated CIDRs, e.g.
    # 127.0.0.0/8 for a receiver on the API's own machine).
    webhook_allowed_networks: Annotated[list[IPvAnyNetwork], NoDecode] = []
    # Celery's hard limit for one phase; the Redis visibility timeout must exceed it.
    phase_time_limit_seconds: int = 12 * 3600
    # The worker's parent imports torch, transformers and peft once, before it forks a child
    # per phase, so each phase starts with them loaded (importing torch does not touch CUDA).
    worker_preload: bool = True
    # torch threads per phase; 0 chooses from the CPUs the worker may use, shared among
    # workers_per_machine workers (`relaytune up` runs three on one machine).
    worker_threads: int = Field(default=0, ge=0)
    workers_per_machine: int = Field(default=1, ge=1)
    # The preprocess artifact stores resized 8-bit images that rebuild the exact fp32 patches;
    # false stores the fp32 patches themselves (the older, far larger layout).
    artifact_compact_images: bool = True

    @model_validator(mode="after")
    def _derive_defaults(self) -> Settings:
        self.data_dir = self.data_dir.expanduser().resolve()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'relaytune.db'}"
        self.model_root = (self.model_root or self.data_dir / "models").expanduser().resolve()
        self.default_base_model = self.default_base_model.strip() or TINY_MODEL_NAME
        if self.environment == "production" and not self.s3_endpoint:
            raise ValueError("RELAYTUNE_S3_ENDPOINT is required in production")
        self._derive_heartbeat()
        return self

    def _derive_heartbeat(self) -> None:
        lease = self.lease_seconds
        if not self.heartbeat_seconds:
            self.heartbeat_seconds = min(lease / 4, MAX_DERIVED_HEARTBEAT_SECONDS)
        elif self.heartbeat_seconds > lease / 2:
            # One late beat (a slow commit, a busy database) would let the lease run out and
            # the reaper would take a healthy run away from its worker.
            raise ValueError(
                f"RELAYTUNE_HEARTBEAT_SECONDS ({self.heartbeat_seconds:g}) must be at most half "
                f"of RELAYTUNE_LEASE_SECONDS ({lease}); unset RELAYTUNE_HEARTBEAT_SECONDS to "
                f"derive it from the lease (a quarter of it, at most "
                f"{MAX_DERIVED_HEARTBEAT_SECONDS:g} s)"
            )

    @field_validator("allowed_models", "webhook_allowed_networks", mode="before")
    @classmethod
    def _split_names(cls, value: object) -> object:
        if isinstance(value, str):
            return [name.strip() for name in value.split(",") if name.strip()]
        return value

    @property
    def default_model_dir(self) -> Path:
        """Where `relaytune make-tiny-model` writes the tiny default model."""
        assert self.model_root is not None
        return self.model_root / TINY_MODEL_NAME

    @property
    def object_store_dir(self) -> Path:
        return self.data_dir / "objects"


@lru_cache
def get_settings() -> Settings:
    return Settings()
