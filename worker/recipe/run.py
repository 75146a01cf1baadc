"""The state of one train_epochs call and its optimizer step, written out.

Model, optimizer, LR schedule, GradScaler, data order and memory plan live here; the loop that
drives them (checkpoints, evaluation, stop, OOM recovery) is in train.py.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.errors import RelaytuneError
from worker.recipe.checkpoint import (
    Best,
    Position,
    load_checkpoint,
    restore_snapshot,
    save_checkpoint,
    snapshot,
)
from worker.recipe.data import collate, epoch_windows, split_window, steps_per_epoch, to_device
from worker.recipe.lora import enable_gradient_checkpointing, load_base, wrap_with_lora
from worker.recipe.metrics import evaluate_samples, forward_logits, label_token_count, token_stats
from worker.recipe.oom import MemoryPlan
from worker.recipe.precision import resolve_precision
from worker.recipe.preprocess import load_artifact

logger = logging.getLogger(__name__)


class NonFiniteLoss(RelaytuneError):
    """A step's loss or gradient norm is NaN or infinite: training has diverged, and any update
    from here would write NaNs into the adapter. The phase fails instead."""

    code = "non_finite_loss"


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor for optimizer step s (0-based): linear ramp, then cosine to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def lr_warmup_steps(ratio: float, total_steps: int) -> int:
    """Optimizer steps of linear LR ramp: a share of the whole job's steps (not of a phase's),
    at least one unless the ratio is 0."""
    return max(1, round(ratio * total_steps)) if ratio > 0 else 0


class TrainingRun:
    """One process's model, optimizer, schedule and data for a job's hyperparameters."""

    def __init__(self, artifact_dir: Path, model_dir: str, hp: dict[str, Any]) -> None:
        import torch

        self.hp = hp
        self.manifest, self.samples = load_artifact(artifact_dir)
        self.train_idx: list[int] = list(self.manifest["train"])
        self.val_idx: list[int] = list(self.manifest["val"])
        self.pad_id = int(self.manifest["pad_token_id"])
        self.precision = resolve_precision(hp["precision"])
        base = load_base(model_dir, self.precision.device, self.precision.dtype)
        self.model = wrap_with_lora(base, hp, hp["seed"])
        effective = hp["batch_size"] * hp["gradient_accumulation"]
        self.plan = MemoryPlan(hp["batch_size"], effective, False)
        if hp["gradient_checkpointing"]:
            self.apply_plan(MemoryPlan(hp["batch_size"], effective, True))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay: LoRA's B starts at zero and decay would only pull it back there.
        self.optimizer = torch.optim.AdamW(self.params, lr=hp["learning_rate"], weight_decay=0.0)
        self.scaler = self.precision.grad_scaler()
        self.steps_per_epoch = steps_per_epoch(len(self.train_idx), effective)
        self.total_steps = hp["total_epochs"] * self.steps_per_epoch
        warmup = lr_warmup_steps(hp["lr_warmup_ratio"], self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup, self.total_steps)
        )
        # True while an optimizer step changes weights and optimizer state: an OOM there
        # leaves them half-updated, so recovery must roll back to a snapshot.
        self.updating = False
        logger.info("precision %s on %s", self.precision.name, self.precision.device)

    def windows(self, epoch: int) -> list[list[int]]:
        return epoch_windows(self.train_idx, self.plan.effective_batch, self.hp["seed"], epoch)

    def apply_plan(self, plan: MemoryPlan) -> None:
        if plan.gradient_checkpointing and not self.plan.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.plan = plan

    def optimizer_step(self, window: list[int]) -> dict[str, float]:
        """Forward/backward each micro-batch of the window, then one clipped AdamW step."""
        import torch

        started = time.perf_counter()
        micro_batches = split_window(window, self.plan.micro_batch_size)
        batches = [collate([self.samples[i] for i in mb], self.pad_id) for mb in micro_batches]
        # Normalise by the label tokens of the whole window, so every token weighs the same
        # whatever micro-batch it falls in (and however an OOM recovery splits the window).
        window_tokens = sum(label_token_count(b) for b in batches)
        loss_value = 0.0
        for cpu_batch in batches:
            batch = to_device(cpu_batch, self.precision.device, self.precision.dtype)
            with self.precision.autocast():
                logits = forward_logits(self.model, batch)
            loss_sum, _, _ = token_stats(logits, batch["labels"])
            loss = loss_sum / window_tokens
            (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            loss_value += float(loss.detach())
            # Free this micro-batch's graph outputs before the next forward, or memory peaks.
            del logits, loss_sum, loss, batch

        self.updating = True
        if self.scaler is not None:
            # Clip the true gradients, not the scaled ones.
            self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.hp["max_grad_norm"])
        lr = float(self.scheduler.get_last_lr()[0])
        # fp16's grad scaler skips a step whose scaled gradients overflowed (and lowers the
        # scale), so only the loss decides there; otherwise the gradients must be finite too.
        norm_ok = self.scaler is not None or math.isfinite(float(grad_norm))
        if not (math.isfinite(loss_value) and norm_ok):
            self.updating = False
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(
                f"training diverged: loss {loss_value}, gradient norm {float(grad_norm)} at "
                f"learning rate {lr:g}; nothing was updated with it. Lower learning_rate or "
                "lora_alpha and requeue the phase", param="hyperparameters")
        if self.scaler is not None:
            # Skips the update when the scaled gradients overflowed, and adapts the scale.
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.updating = False
        return {
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": float(window_tokens),
            "samples_per_s": len(window) / max(time.perf_counter() - started, 1e-9),
        }

    def evaluate(self) -> dict[str, float]:
        """Validation loss and token accuracy; empty without validation samples."""
        if not self.val_idx:
            return {}
        with self.precision.autocast():
            loss, accuracy = evaluate_samples(
                self.model,
                self.samples,
                self.val_idx,
                pad_token_id=self.pad_id,
                device=self.precision.device,
                dtype=self.precision.dtype,
            )
        return {"val_loss": loss, "token_accuracy": accuracy}

    def release_memory(self) -> None:
        import gc

        import torch

        self.optimizer.zero_grad(set_to_none=True)
        self.updating = False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
        }

    def info(self) -> dict[str, Any]:
        return {**self.plan.describe(), "precision": self.precision.name}

    def save(self, ckpt_dir: Path, position: Position, best: Best, kind: str,
             metrics: dict[str, float | None]) -> Path:
        return save_checkpoint(ckpt_dir, **self._state(), position=position, best=best,
                               kind=kind, info={**metrics, **self.info()},
                               hyperparameters=self.hp)

    def load(self, ckpt_dir: Path) -> tuple[Position, Best]:
        return load_checkpoint(ckpt_dir, **self._state(), best_metric=self.hp["best_metric"])

    def snapshot(self, position: Position, best: Best) -> dict[str, Any]:
        return snapshot(**self._state(), position=position, best=best)

    def restore(self, state: dict[str, Any]) -> tuple[Position, Best]:
        return restore_snapshot(state, **self._state(), best_metric=self.hp["best_metric"])
