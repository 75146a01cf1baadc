"""Hyperparameters of a fine-tuning job: relaytune's defaults, validated once at submit."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

# Strict: `true` is not 1 and "8" is not 8; a number must be finite. Every bound is explicit,
# so nothing reaches a worker that it would refuse (or overflow on) after the user paid.
STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
MAX_SEED = 2**32 - 1  # numpy's seed range; torch's is wider
MAX_PIXELS = 2**31 - 1
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.]{1,128}$")]
ModuleNames = Annotated[list[ModuleName], Field(max_length=64)]


class Augmentation(BaseModel):
    """torchvision transforms v2 applied to training images only; `copies` new images each."""

    model_config = STRICT

    enabled: bool = True
    copies: int = Field(1, ge=0, le=16)
    rotation_degrees: float = Field(10.0, ge=0, le=180)
    crop_scale_min: float = Field(0.8, gt=0, le=1)
    color_jitter: float = Field(0.2, ge=0, le=1)


class Hyperparameters(BaseModel):
    """Every field has a default (the defaults below), so a job may name
    none of them."""

    model_config = STRICT

    # LoRA (default r=8, alpha=32, q/v, dropout 0.1)
    lora_rank: int = Field(8, gt=0, le=256)
    lora_alpha: float = Field(32, gt=0, le=1e6)
    lora_dropout: float = Field(0.1, ge=0, lt=1)
    target_modules: ModuleNames | Literal["all-linear"] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Projection names matched inside the language model, or 'all-linear'",
    )
    tune_vision: bool = Field(False, description="Also put LoRA into the vision tower")
    tune_merger: bool = Field(False, description="Also put LoRA into the vision-language merger")
    modules_to_save: list[ModuleName] = Field(default_factory=list, max_length=16)

    # optimisation (default batch 2 x accumulation 4, 5 warmup epochs of 8)
    batch_size: int = Field(2, gt=0, le=64)
    gradient_accumulation: int = Field(4, gt=0, le=256)
    learning_rate: float = Field(2e-4, gt=0, le=1)
    lr_warmup_ratio: float = Field(0.1, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0, le=1e6)
    warmup_epochs: int = Field(5, gt=0, le=1000)
    total_epochs: int = Field(8, gt=0, le=1000)
    seed: int = Field(42, ge=0, le=MAX_SEED)
    gradient_checkpointing: bool = False
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"

    # data
    validation_samples: int | None = Field(
        None, ge=0, le=100_000, description="Held-out samples; default: a few, chosen by seed"
    )
    augmentation: Augmentation = Field(default_factory=Augmentation)
    min_pixels: int | None = Field(None, gt=0, le=MAX_PIXELS)
    max_pixels: int | None = Field(None, gt=0, le=MAX_PIXELS)

    # checkpoints (by default every 2 hours), best model, export
    # At least a second: checkpoints more often than that are checkpoint_every_steps' job, and
    # an interval near zero would make the estimate's checkpoint count infinite.
    checkpoint_interval_seconds: float = Field(7200.0, ge=1, le=30 * 86400)
    checkpoint_every_steps: int = Field(
        0, ge=0, le=1_000_000, description="0 turns step checkpoints off"
    )
    keep_last_checkpoints: int = Field(2, ge=1, le=100)
    best_metric: Literal["val_loss", "token_accuracy"] = "val_loss"
    export_merged: bool = False
    eval_max_new_tokens: int = Field(32, gt=0, le=512)

    @model_validator(mode="after")
    def _consistent(self) -> Hyperparameters:
        if self.warmup_epochs > self.total_epochs:
            raise ValueError(
                f"warmup_epochs ({self.warmup_epochs}) must not exceed "
                f"total_epochs ({self.total_epochs})"
            )
        if isinstance(self.target_modules, list) and not self.target_modules:
            raise ValueError("target_modules must name at least one module or be 'all-linear'")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError(
                f"min_pixels ({self.min_pixels}) exceeds max_pixels ({self.max_pixels})"
            )
        return self
