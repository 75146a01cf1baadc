"""Hyperparameters of a fine-tuning job: the seed's defaults, validated once at submit."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Hyperparameters(BaseModel):
    """Every field has the seed document's default, so a job may name none of them."""

    model_config = ConfigDict(extra="forbid")

    lora_rank: int = Field(8, gt=0, le=256)
    lora_alpha: float = Field(32, gt=0)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1)
    batch_size: int = Field(2, gt=0, le=64)
    gradient_accumulation: int = Field(4, gt=0, le=256)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    warmup_epochs: int = Field(5, gt=0)
    total_epochs: int = Field(8, gt=0, le=1000)
    seed: int = 42

    @model_validator(mode="after")
    def _warmup_within_total(self) -> Hyperparameters:
        if self.warmup_epochs > self.total_epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must not exceed "
                f"total_epochs ({self.total_epochs})"
            )
        return self
