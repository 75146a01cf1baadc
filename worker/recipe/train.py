"""The LoRA training loop, written out: one call trains epochs [start_epoch, end_epoch).

The schedule spans hyperparameters['total_epochs'], so a warmup call (epochs 0..w) and a final
call resumed from its checkpoint (epochs w..total) on another machine make one continuous run.
Checkpoints go under out_dir: `step-<k>/` at the end of each epoch but the last (kind "step")
and on a stop request (kind "stop"); the final one into out_dir itself (kind "final"). Each is
handed to hooks.on_checkpoint as soon as it is written; once the final checkpoint is due, the
`step-<k>/` directories are removed, so that out_dir then holds exactly one checkpoint.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.recipe.checkpoint import CheckpointMismatch, Position, load_checkpoint, save_checkpoint
from worker.recipe.data import (
    accumulation_windows,
    collate,
    epoch_micro_batches,
    steps_per_epoch,
    to_device,
)
from worker.recipe.lora import load_base, pick_device, wrap_with_lora
from worker.recipe.metrics import evaluate_samples, forward_logits, label_token_count, token_stats
from worker.recipe.preprocess import load_artifact

logger = logging.getLogger(__name__)

# Share of all optimizer steps spent ramping the learning rate up. `warmup_epochs` is not this:
# it is where the run moves from the cheap GPU pool to the fast one.
LR_WARMUP_FRACTION = 0.1
MAX_GRAD_NORM = 1.0
HYPERPARAMETER_KEYS = (
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "batch_size",
    "gradient_accumulation",
    "learning_rate",
    "warmup_epochs",
    "total_epochs",
    "seed",
)


def _no_progress(step: int, total_steps: int, epoch: int, metrics: dict[str, float]) -> None:
    return None


def _never_stop() -> bool:
    return False


def _no_checkpoint(ckpt_dir: Path, step: int, kind: str) -> None:
    return None


@dataclass
class TrainHooks:
    """Callbacks into the caller (the Celery glue); the defaults do nothing."""

    on_progress: Callable[[int, int, int, dict[str, float]], None] = _no_progress
    should_stop: Callable[[], bool] = _never_stop
    on_checkpoint: Callable[[Path, int, str], None] = _no_checkpoint


@dataclass(frozen=True)
class TrainResult:
    stopped: bool
    global_step: int
    last_loss: float | None
    checkpoint_dir: Path
    val_loss: float | None


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor for optimizer step s (0-based): linear ramp, then cosine to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    return factor


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _check_hyperparameters(hp: dict[str, Any], start_epoch: int, end_epoch: int) -> None:
    missing = [k for k in HYPERPARAMETER_KEYS if k not in hp]
    if missing:
        raise ValueError(f"hyperparameters lack {missing}")
    if not 0 <= start_epoch < end_epoch <= hp["total_epochs"]:
        raise ValueError(
            f"need 0 <= start_epoch < end_epoch <= total_epochs ({hp['total_epochs']}), "
            f"got [{start_epoch}, {end_epoch})"
        )


class _Run:
    """The state of one train_epochs call: model, optimizer, schedule, data, position."""

    def __init__(self, artifact_dir: Path, model_dir: str, hp: dict[str, Any]) -> None:
        import torch

        self.hp = hp
        self.manifest, self.samples = load_artifact(artifact_dir)
        self.train_idx: list[int] = list(self.manifest["train"])
        self.val_idx: list[int] = list(self.manifest["val"])
        self.pad_id = int(self.manifest["pad_token_id"])
        self.device, self.dtype = pick_device()
        self.model = wrap_with_lora(load_base(model_dir, self.device, self.dtype), hp, hp["seed"])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay: LoRA's B starts at zero and decay would only pull it back there.
        self.optimizer = torch.optim.AdamW(self.params, lr=hp["learning_rate"], weight_decay=0.0)
        self.steps_per_epoch = steps_per_epoch(
            len(self.train_idx), hp["batch_size"], hp["gradient_accumulation"]
        )
        self.total_steps = hp["total_epochs"] * self.steps_per_epoch
        warmup = max(1, round(LR_WARMUP_FRACTION * self.total_steps))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup, self.total_steps)
        )

    def windows(self, epoch: int) -> list[list[list[int]]]:
        micro = epoch_micro_batches(self.train_idx, self.hp["batch_size"], self.hp["seed"], epoch)
        return accumulation_windows(micro, self.hp["gradient_accumulation"])

    def optimizer_step(self, window: list[list[int]]) -> dict[str, float]:
        """Forward/backward each micro-batch of the window, then one clipped AdamW step."""
        import torch

        started = time.perf_counter()
        batches = [collate([self.samples[i] for i in mb], self.pad_id) for mb in window]
        # Normalise by the label tokens of the whole window, so every token weighs the same
        # whatever micro-batch it falls in.
        window_tokens = sum(label_token_count(b) for b in batches)
        loss_value = 0.0
        for cpu_batch in batches:
            batch = to_device(cpu_batch, self.device, self.dtype)
            loss_sum, _, _ = token_stats(forward_logits(self.model, batch), batch["labels"])
            loss = loss_sum / window_tokens
            loss.backward()
            loss_value += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, MAX_GRAD_NORM)
        lr = float(self.scheduler.get_last_lr()[0])
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        n_samples = sum(len(mb) for mb in window)
        return {
            "loss": loss_value,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": float(window_tokens),
            "samples_per_s": n_samples / max(time.perf_counter() - started, 1e-9),
        }

    def val_loss(self) -> float:
        loss, _ = evaluate_samples(
            self.model,
            self.samples,
            self.val_idx,
            pad_token_id=self.pad_id,
            device=self.device,
            dtype=self.dtype,
        )
        return loss

    def save(
        self,
        ckpt_dir: Path,
        position: Position,
        kind: str,
        loss: float | None,
        val_loss: float | None,
    ) -> Path:
        return save_checkpoint(
            ckpt_dir,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            position=position,
            kind=kind,
            loss=loss,
            val_loss=val_loss,
            hyperparameters=self.hp,
        )


def _start_position(run: _Run, resume_dir: Path | None, start_epoch: int) -> Position:
    if resume_dir is None:
        if start_epoch != 0:
            raise CheckpointMismatch(f"start_epoch {start_epoch} needs a checkpoint to resume")
        return Position(0, 0, 0, run.total_steps)
    position = load_checkpoint(
        resume_dir, model=run.model, optimizer=run.optimizer, scheduler=run.scheduler
    )
    if position.total_steps != run.total_steps:
        raise CheckpointMismatch(
            f"checkpoint schedule has {position.total_steps} steps, this run "
            f"{run.total_steps}: artifact or hyperparameters differ",
            param=str(resume_dir),
        )
    if position.epoch != start_epoch:
        raise CheckpointMismatch(
            f"checkpoint stands at epoch {position.epoch}, not start_epoch {start_epoch}",
            param=str(resume_dir),
        )
    return position


def train_epochs(
    *,
    artifact_dir: Path,
    model_dir: str,
    hyperparameters: dict[str, Any],
    start_epoch: int,
    end_epoch: int,
    resume_dir: Path | None,
    out_dir: Path,
    hooks: TrainHooks,
) -> TrainResult:
    """Train epochs [start_epoch, end_epoch), resuming from resume_dir if given.

    Without resume_dir, start_epoch must be 0. A resumed run continues from the checkpoint's
    position, including mid-epoch after a stop. A stop request at the last step of the call is
    moot: the run has finished, and the final checkpoint is written. on_checkpoint must be
    done with a `step` directory when it returns: it is deleted before the final one is written.
    """
    hp = dict(hyperparameters)
    _check_hyperparameters(hp, start_epoch, end_epoch)
    out_dir = Path(out_dir)
    logger.info("train epochs [%d, %d) hyperparameters=%s", start_epoch, end_epoch, hp)

    run = _Run(Path(artifact_dir), model_dir, hp)
    if resume_dir is None:
        _seed_everything(hp["seed"])
    position = _start_position(run, resume_dir, start_epoch)
    run.model.train()

    last_loss: float | None = None
    val_loss: float | None = None
    handed_over: list[Path] = []
    for epoch in range(start_epoch, end_epoch):
        windows = run.windows(epoch)
        first = position.steps_in_epoch if epoch == position.epoch else 0
        for i in range(first, len(windows)):
            metrics = run.optimizer_step(windows[i])
            last_loss = metrics["loss"]
            position = Position(position.global_step + 1, epoch, i + 1, run.total_steps)
            end_of_epoch = i == len(windows) - 1
            if end_of_epoch:
                val_loss = run.val_loss()
                metrics["val_loss"] = val_loss
            hooks.on_progress(position.global_step, run.total_steps, epoch, metrics)
            # At an epoch's end the stop check waits for the epoch checkpoint below.
            if not end_of_epoch and hooks.should_stop():
                ckpt = run.save(
                    out_dir / f"step-{position.global_step}", position, "stop", last_loss, val_loss
                )
                hooks.on_checkpoint(ckpt, position.global_step, "stop")
                return TrainResult(True, position.global_step, last_loss, ckpt, val_loss)
        position = Position(position.global_step, epoch + 1, 0, run.total_steps)
        if epoch + 1 < end_epoch:
            ckpt = run.save(
                out_dir / f"step-{position.global_step}", position, "step", last_loss, val_loss
            )
            hooks.on_checkpoint(ckpt, position.global_step, "step")
            if hooks.should_stop():
                return TrainResult(True, position.global_step, last_loss, ckpt, val_loss)
            handed_over.append(ckpt)

    # Nested step directories would otherwise travel with every upload of out_dir.
    for path in handed_over:
        shutil.rmtree(path)
    ckpt = run.save(out_dir, position, "final", last_loss, val_loss)
    hooks.on_checkpoint(ckpt, position.global_step, "final")
    logger.info(
        "trained to step %d/%d: loss %s, val_loss %s",
        position.global_step,
        run.total_steps,
        last_loss,
        val_loss,
    )
    return TrainResult(False, position.global_step, last_loss, ckpt, val_loss)
