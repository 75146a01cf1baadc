"""The LoRA training loop, written out: one call trains epochs [start_epoch, end_epoch).

The schedule spans hyperparameters['total_epochs'], so a warmup call (epochs 0..w) and a final
call resumed from its checkpoint (epochs w..total) on another machine make one continuous run.

Checkpoints (each handed to hooks.on_checkpoint as soon as it is written):
- rolling, in `out_dir/step-<k>/`: kind "epoch" at each epoch end but the call's last, "step"
  every `checkpoint_every_steps` optimizer steps, "time" when `checkpoint_interval_seconds`
  passed since the last one, "stop" on a stop request. Only the newest `keep_last_checkpoints`
  stay on disk; a stop returns the one at its position.
- "best" in `out_dir/best/` (replaced) whenever the epoch-end validation metric beats the best
  of the whole job so far; that value travels in every checkpoint, so a final phase writes a
  best only when it beats the warmup's.
- "final" in `out_dir/final/` when the call has trained all its epochs.

A checkpoint holds the position, so a call stopped or killed at any step and run again from its
latest checkpoint gives the same numbers as one that never stopped.

On a CUDA out-of-memory error the step is retried with half the micro-batch (and as many more
micro-batches per optimizer step), then with gradient checkpointing; see oom.py.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

from orchestrator.hyperparameters import Hyperparameters
from worker.recipe.checkpoint import (
    Best,
    CheckpointMismatch,
    Position,
    prune_rolling,
    read_manifest,
    restore_rng,
    rng_state,
)
from worker.recipe.oom import is_out_of_memory
from worker.recipe.run import TrainingRun, warmup_cosine

logger = logging.getLogger(__name__)

__all__ = ["Carry", "TrainHooks", "TrainResult", "train_epochs", "warmup_cosine"]


def _no_progress(step: int, total_steps: int, epoch: int, metrics: dict[str, float]) -> None:
    return None


def _never_stop() -> bool:
    return False


def _no_checkpoint(ckpt_dir: Path, step: int, kind: str) -> None:
    return None


def _no_event(type_: str, data: dict[str, Any]) -> None:
    return None


def _nothing_before(step: int) -> None:
    return None


def _nothing_when_ready() -> None:
    return None


@dataclass
class TrainHooks:
    """Callbacks into the caller (the Celery glue); the defaults do nothing.

    before_step(global_step) runs before each optimizer step (0-based index of the step about to
    run); an error it raises counts as raised by the step, which lets tests inject faults.
    on_ready() runs once the model is loaded (and resumed) and the loop is about to start, so
    a caller can tell the model load apart from training.
    """

    on_progress: Callable[[int, int, int, dict[str, float]], None] = _no_progress
    should_stop: Callable[[], bool] = _never_stop
    on_checkpoint: Callable[[Path, int, str], None] = _no_checkpoint
    on_event: Callable[[str, dict[str, Any]], None] = _no_event
    before_step: Callable[[int], None] = _nothing_before
    on_ready: Callable[[], None] = _nothing_when_ready


@dataclass
class Carry:
    """A finished call's live state, so the next phase on the same worker continues in memory
    (same model, optimizer, schedule, RNG) instead of reloading its checkpoint."""

    run: TrainingRun
    position: Position
    best: Best
    metrics: dict[str, float | None]


@dataclass(frozen=True)
class TrainResult:
    stopped: bool
    global_step: int
    last_loss: float | None
    checkpoint_dir: Path
    val_loss: float | None
    token_accuracy: float | None = None
    best_metric: str = "val_loss"
    best_value: float | None = None
    best_step: int | None = None
    # The best checkpoint written by this call; None when the best stands from an earlier call
    # (its step is best_step) or there is no validation set.
    best_checkpoint_dir: Path | None = None
    micro_batch_size: int = 0
    gradient_accumulation: int = 0
    gradient_checkpointing: bool = False
    precision: str = "fp32"
    oom_recoveries: int = 0
    # Work done by this call: training samples and their input tokens over every optimizer
    # step (each epoch counted), and held-out samples scored (each validation pass counted).
    samples: int = 0
    tokens: int = 0
    validation_samples: int = 0
    carry: Carry | None = None


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def _check_range(hp: dict[str, Any], start_epoch: int, end_epoch: int, resuming: bool) -> None:
    # An empty range is fine for a resumed run: a final phase with no epochs left
    # (warmup_epochs == total_epochs) only republishes the warmup's state and evaluates it.
    if not 0 <= start_epoch <= end_epoch <= hp["total_epochs"] or (
        start_epoch == end_epoch and not resuming
    ):
        raise ValueError(
            f"need 0 <= start_epoch < end_epoch <= total_epochs ({hp['total_epochs']}) "
            f"(or start_epoch == end_epoch when resuming), got [{start_epoch}, {end_epoch})"
        )


class _Loop:
    """Drives a TrainingRun from a position to end_epoch, writing checkpoints on the way."""

    def __init__(self, run: TrainingRun, hooks: TrainHooks, out_dir: Path, end_epoch: int,
                 position: Position, best: Best, metrics: dict[str, float | None]) -> None:
        self.run, self.hooks, self.out_dir, self.end_epoch = run, hooks, out_dir, end_epoch
        self.position, self.best = position, best
        self.metrics = metrics  # loss, val_loss, token_accuracy as last seen
        self.best_dir: Path | None = None
        self.rolling: list[Path] = []
        self.oom_recoveries = 0
        self.samples = self.tokens = self.validation_samples = 0
        hp = run.hp
        self.every_steps = int(hp["checkpoint_every_steps"])
        self.interval = float(hp["checkpoint_interval_seconds"])
        self.keep = int(hp["keep_last_checkpoints"])
        # Where an OOM inside an optimizer update rolls back to: the last checkpoint written,
        # or this call's starting state.
        self.restore_point = run.snapshot(position, best)
        self.last_save = monotonic()

    def train(self) -> TrainResult:
        self.hooks.on_ready()
        windows: dict[int, list[list[int]]] = {}
        while self.position.epoch < self.end_epoch:
            epoch, index = self.position.epoch, self.position.steps_in_epoch
            if epoch not in windows:
                windows[epoch] = self.run.windows(epoch)
            epoch_windows = windows[epoch]
            metrics = self._step(epoch_windows[index])
            if metrics is None:  # rolled back to the restore point: carry on from there
                continue
            self.metrics["loss"] = metrics["loss"]
            self._count(epoch_windows[index])
            end_of_epoch = index + 1 == len(epoch_windows)
            step = self.position.global_step + 1
            self.position = Position(step, epoch, index + 1, self.run.total_steps)
            if end_of_epoch:
                self.position = Position(step, epoch + 1, 0, self.run.total_steps)
                metrics.update(self._evaluate(step))
            self.hooks.on_progress(step, self.run.total_steps, epoch, metrics)
            if self.position.epoch == self.end_epoch:
                break  # a stop request now is moot: the final checkpoint is due
            kind = self._due(end_of_epoch)
            ckpt = self._save_rolling(kind) if kind else None
            if self.hooks.should_stop():
                return self._result(ckpt or self._save_rolling("stop"), stopped=True)
        ckpt = self.run.save(self.out_dir / "final", self.position, self.best, "final",
                             self.metrics)
        self.hooks.on_checkpoint(ckpt, self.position.global_step, "final")
        logger.info("trained to step %d/%d: %s", self.position.global_step,
                    self.run.total_steps, self.metrics)
        return self._result(ckpt, stopped=False)

    def _step(self, window: list[int]) -> dict[str, float] | None:
        """One optimizer step; on OOM, shrink the memory plan and return None to retry."""
        rng = rng_state()
        try:
            self.hooks.before_step(self.position.global_step)
            return self.run.optimizer_step(window)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            updating = self.run.updating
        # Out of the except block, the traceback no longer pins the failed step's tensors.
        self._recover(rng, updating)
        return None

    def _recover(self, rng: dict[str, Any], updating: bool) -> None:
        old = self.run.plan
        failed_step = self.position.global_step
        self.run.release_memory()
        new = old.after_oom()  # raises OutOfMemory when nothing smaller is left
        self.run.apply_plan(new)
        if updating:
            # Weights or optimizer state may be half-updated: roll back to the last checkpoint.
            self.position, self.best = self.run.restore(self.restore_point)
        else:
            # Nothing but gradients changed; replay the step's dropout masks from the start.
            restore_rng(rng)
        self.oom_recoveries += 1
        data = {
            "step": failed_step,
            "resumed_from_step": self.position.global_step,
            "old_micro_batch_size": old.micro_batch_size,
            "old_gradient_accumulation": old.accumulation,
            "new_micro_batch_size": new.micro_batch_size,
            "new_gradient_accumulation": new.accumulation,
            "gradient_checkpointing": new.gradient_checkpointing,
        }
        logger.warning("out of memory at step %d; retrying with %s", failed_step, data)
        self.hooks.on_event("oom_recovered", data)

    def _count(self, window: list[int]) -> None:
        self.samples += len(window)
        self.tokens += sum(int(self.run.samples[i]["input_ids"].numel()) for i in window)

    def _evaluate(self, step: int) -> dict[str, float]:
        scores = self.run.evaluate()
        if scores:
            self.validation_samples += len(self.run.val_idx)
        self.metrics.update(scores)
        metric = self.best.metric
        if metric in scores and self.best.improved_by(scores[metric]):
            self.best = Best(metric, scores[metric], step)
            self.best_dir = self.run.save(self.out_dir / "best", self.position, self.best,
                                          "best", self.metrics)
            self.hooks.on_checkpoint(self.best_dir, step, "best")
        return scores

    def _due(self, end_of_epoch: bool) -> str | None:
        if end_of_epoch:
            return "epoch"
        if self.every_steps and self.position.global_step % self.every_steps == 0:
            return "step"
        if monotonic() - self.last_save >= self.interval:
            return "time"
        return None

    def _save_rolling(self, kind: str) -> Path:
        step = self.position.global_step
        path = self.out_dir / f"step-{step}"
        ckpt = self.run.save(path, self.position, self.best, kind, self.metrics)
        self.hooks.on_checkpoint(ckpt, step, kind)
        # The same step is written again after an OOM rollback; keep one entry per directory.
        self.rolling = prune_rolling([p for p in self.rolling if p != path] + [path], self.keep)
        self.restore_point = self.run.snapshot(self.position, self.best)
        self.last_save = monotonic()
        return ckpt

    def _result(self, ckpt: Path, *, stopped: bool) -> TrainResult:
        plan = self.run.plan
        return TrainResult(
            stopped=stopped,
            global_step=self.position.global_step,
            last_loss=self.metrics.get("loss"),
            checkpoint_dir=ckpt,
            val_loss=self.metrics.get("val_loss"),
            token_accuracy=self.metrics.get("token_accuracy"),
            best_metric=self.best.metric,
            best_value=self.best.value,
            best_step=self.best.step,
            best_checkpoint_dir=self.best_dir,
            micro_batch_size=plan.micro_batch_size,
            gradient_accumulation=plan.accumulation,
            gradient_checkpointing=plan.gradient_checkpointing,
            precision=self.run.precision.name,
            oom_recoveries=self.oom_recoveries,
            samples=self.samples,
            tokens=self.tokens,
            validation_samples=self.validation_samples,
            carry=None if stopped else Carry(self.run, self.position, self.best,
                                             dict(self.metrics)),
        )


def _resume(run: TrainingRun, resume_dir: Path, start_epoch: int, end_epoch: int
            ) -> tuple[Position, Best, dict[str, float | None]]:
    manifest = read_manifest(resume_dir)
    position, best = run.load(resume_dir)
    if position.total_steps != run.total_steps:
        raise CheckpointMismatch(
            f"checkpoint schedule has {position.total_steps} steps, this run "
            f"{run.total_steps}: artifact or hyperparameters differ",
            param=str(resume_dir),
        )
    # Anywhere in this call's range: the warmup's end for a final phase, or a mid-phase
    # checkpoint when a phase whose worker died runs again.
    inside = start_epoch <= position.epoch < end_epoch or (
        position.epoch == end_epoch and position.steps_in_epoch == 0
    )
    if not inside:
        raise CheckpointMismatch(
            f"checkpoint stands at epoch {position.epoch} step {position.steps_in_epoch}, "
            f"outside epochs [{start_epoch}, {end_epoch}]",
            param=str(resume_dir),
        )
    metrics = {k: manifest.get(k) for k in ("loss", "val_loss", "token_accuracy")}
    return position, best, metrics


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
    carry: Carry | None = None,
) -> TrainResult:
    """Train epochs [start_epoch, end_epoch), resuming from resume_dir if given.

    Without resume_dir, start_epoch must be 0. With it, training continues from the
    checkpoint's position, which must lie within [start_epoch, end_epoch]. With `carry` (the
    previous call's result in this process), training continues from that live state exactly
    as it would from its final checkpoint, without loading anything. Hyperparameters the
    dict lacks take their defaults (a job submitted before they existed).
    """
    hp = Hyperparameters.model_validate(hyperparameters).model_dump()
    _check_range(hp, start_epoch, end_epoch,
                 resuming=resume_dir is not None or carry is not None)
    out_dir = Path(out_dir)
    logger.info("train epochs [%d, %d) hyperparameters=%s", start_epoch, end_epoch, hp)
    if carry is not None:
        if carry.position.epoch != start_epoch or carry.position.steps_in_epoch != 0:
            raise CheckpointMismatch(
                f"the carried state stands at epoch {carry.position.epoch} step "
                f"{carry.position.steps_in_epoch}, not at the start of epoch {start_epoch}")
        carry.run.model.train()
        return _Loop(carry.run, hooks, out_dir, end_epoch, carry.position, carry.best,
                     dict(carry.metrics)).train()

    run = TrainingRun(Path(artifact_dir), model_dir, hp)
    metrics: dict[str, float | None] = {"loss": None, "val_loss": None, "token_accuracy": None}
    if resume_dir is None:
        if start_epoch != 0:
            raise CheckpointMismatch(f"start_epoch {start_epoch} needs a checkpoint to resume")
        _seed_everything(hp["seed"])
        position = Position(0, 0, 0, run.total_steps)
        best = Best(hp["best_metric"])
    else:
        position, best, metrics = _resume(run, Path(resume_dir), start_epoch, end_epoch)
    run.model.train()
    return _Loop(run, hooks, out_dir, end_epoch, position, best, metrics).train()
