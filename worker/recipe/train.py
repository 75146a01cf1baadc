"""The LoRA training recipe, written out in the order it runs: one `train_epochs` call trains
epochs [start_epoch, end_epoch) of a job.

    setup           Trainer.__init__: data, base model + LoRA, memory plan, optimizer, schedule
    train loop      Trainer.train: one optimizer step per window of samples, in epoch order
    optimizer step  Trainer.optimizer_step: forward/backward per micro-batch, clip, AdamW step
    evaluate        at each epoch end: validation loss and token accuracy, best checkpoint
    save            rolling, best and final checkpoints, each handed to hooks.on_checkpoint
    resume          from a checkpoint directory (another process or machine), or the live
                    Trainer of the previous phase in this process (same-pool fusion)

The schedule spans the job's total_epochs, so a warmup call (epochs 0..w) and a final call
resumed from its checkpoint (epochs w..total) make one continuous run. A checkpoint holds the
position, so a call stopped or killed at any step and run again from its latest checkpoint
gives the same numbers as one that never stopped.

Checkpoints: rolling ones in `out_dir/step-<k>/`, of kind "epoch" at each epoch end but the
call's last, "step" every `checkpoint_every_steps` optimizer steps, "time" when
`checkpoint_interval_seconds` passed since the last one, "stop" on a stop request; only the
newest `keep_last_checkpoints` stay on disk. "best" in `out_dir/best/` whenever the epoch-end
validation metric beats the best of the whole job so far (that value travels in every
checkpoint, so a final phase writes a best only when it beats the warmup's). "final" in
`out_dir/final/` once the call has trained all its epochs.

On a CUDA out-of-memory error the step is retried with half the micro-batch (and as many more
micro-batches per optimizer step), then with gradient checkpointing; see oom.py.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from time import monotonic, perf_counter
from typing import Any

from orchestrator.errors import RelaytuneError
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.layout import CheckpointKind
from worker.recipe.checkpoint import (
    Best,
    CheckpointMismatch,
    Position,
    load_checkpoint,
    prune_rolling,
    read_manifest,
    restore_rng,
    restore_snapshot,
    rng_state,
    save_checkpoint,
    snapshot,
)
from worker.recipe.data import collate, epoch_windows, split_window, steps_per_epoch, to_device
from worker.recipe.lora import enable_gradient_checkpointing, load_base, wrap_with_lora
from worker.recipe.metrics import evaluate_samples, forward_logits, label_token_count, token_stats
from worker.recipe.oom import MemoryPlan, is_out_of_memory
from worker.recipe.precision import resolve_precision
from worker.recipe.preprocess import load_artifact
from worker.recipe.schedule import lr_warmup_steps, warmup_cosine

logger = logging.getLogger(__name__)


class NonFiniteLoss(RelaytuneError):
    """A step's loss or gradient norm is NaN or infinite: training has diverged, and any update
    from here would write NaNs into the adapter. The phase fails instead."""

    code = "non_finite_loss"


def _ignore(*_: Any) -> None:
    return None


def _never() -> bool:
    return False


@dataclass
class TrainHooks:
    """Callbacks into the caller (the Celery glue); the defaults do nothing.

    before_step(global_step) runs before each optimizer step (0-based index of the step about to
    run); an error it raises counts as raised by the step, which lets tests inject faults.
    on_ready() runs once the model is loaded (and resumed) and the loop is about to start, so
    a caller can tell the model load apart from training.
    """

    on_progress: Callable[[int, int, int, dict[str, float]], None] = _ignore
    should_stop: Callable[[], bool] = _never
    on_checkpoint: Callable[[Path, int, CheckpointKind], None] = _ignore
    on_event: Callable[[str, dict[str, Any]], None] = _ignore
    before_step: Callable[[int], None] = _ignore
    on_ready: Callable[[], None] = _ignore


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
    # The live trainer of a call that finished its epochs, so the next phase in this process
    # continues from it (same model, optimizer, schedule, RNG) instead of reloading.
    carry: Trainer | None = None


class Trainer:
    """One job's LoRA training in this process: model, optimizer, schedule, data and position."""

    # --- setup -----------------------------------------------------------------------------

    def __init__(self, artifact_dir: Path, model_dir: str, hp: Hyperparameters) -> None:
        import torch

        self.hp = hp
        self.manifest, self.samples = load_artifact(artifact_dir)
        self.train_idx: list[int] = list(self.manifest["train"])
        self.val_idx: list[int] = list(self.manifest["val"])
        self.pad_id = int(self.manifest["pad_token_id"])

        # The frozen base in the device's precision; the LoRA layers (seeded) in fp32.
        self.precision = resolve_precision(hp.precision)
        base = load_base(model_dir, self.precision.device, self.precision.dtype)
        self.model = wrap_with_lora(base, hp)

        # Each optimizer step takes a window of batch_size x gradient_accumulation samples,
        # split into micro-batches; an out-of-memory recovery only changes the split.
        effective = hp.batch_size * hp.gradient_accumulation
        self.plan = MemoryPlan(hp.batch_size, effective, False)
        if hp.gradient_checkpointing:
            self.apply_plan(MemoryPlan(hp.batch_size, effective, True))

        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # No weight decay: LoRA's B starts at zero and decay would only pull it back there.
        self.optimizer = torch.optim.AdamW(self.params, lr=hp.learning_rate, weight_decay=0.0)
        self.scaler = self.precision.grad_scaler()  # fp16 only
        self.steps_per_epoch = steps_per_epoch(len(self.train_idx), effective)
        self.total_steps = hp.total_epochs * self.steps_per_epoch
        warmup = lr_warmup_steps(hp.lr_warmup_ratio, self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(warmup, self.total_steps)
        )

        self.position = Position(0, 0, 0, self.total_steps)
        self.best = Best(hp.best_metric)
        self.metrics: dict[str, float | None] = {
            "loss": None,
            "val_loss": None,
            "token_accuracy": None,
        }  # as last seen
        # True while an optimizer step changes weights and optimizer state: an OOM there
        # leaves them half-updated, so recovery must roll back to a snapshot.
        self.updating = False
        logger.info("precision %s on %s", self.precision.name, self.precision.device)

    # --- train loop ------------------------------------------------------------------------

    def train(self, end_epoch: int, out_dir: Path, hooks: TrainHooks) -> TrainResult:
        """Train from the current position to the start of end_epoch; stop early (with a
        checkpoint) when hooks.should_stop() says so."""
        self.model.train()
        self.out_dir, self.hooks = out_dir, hooks
        self.rolling: list[Path] = []
        self.best_dir: Path | None = None
        self.oom_recoveries = self.samples_done = self.tokens_done = self.validated = 0
        # Where an OOM inside an optimizer update rolls back to: the last checkpoint written,
        # or this call's starting state.
        self.restore_point = self._snapshot()
        self.last_save = monotonic()

        hooks.on_ready()
        windows: dict[int, list[list[int]]] = {}
        while self.position.epoch < end_epoch:
            epoch, index = self.position.epoch, self.position.steps_in_epoch
            if epoch not in windows:
                windows[epoch] = epoch_windows(
                    self.train_idx, self.plan.effective_batch, self.hp.seed, epoch
                )
            window = windows[epoch][index]
            metrics = self._step_or_recover(window)
            if metrics is None:  # recovered from an OOM: go on from where recovery left it
                continue
            self.metrics["loss"] = metrics["loss"]
            self.samples_done += len(window)
            self.tokens_done += sum(int(self.samples[i]["input_ids"].numel()) for i in window)
            end_of_epoch = index + 1 == len(windows[epoch])
            step = self.position.global_step + 1
            self.position = Position(step, epoch, index + 1, self.total_steps)
            if end_of_epoch:
                self.position = Position(step, epoch + 1, 0, self.total_steps)
                metrics.update(self._evaluate_epoch(step))
            hooks.on_progress(step, self.total_steps, epoch, metrics)
            if self.position.epoch == end_epoch:
                break  # a stop request now is moot: the final checkpoint is due
            kind = self._checkpoint_due(end_of_epoch)
            ckpt = self._save_rolling(kind) if kind else None
            if hooks.should_stop():
                return self._result(ckpt or self._save_rolling(CheckpointKind.STOP), stopped=True)
        ckpt = self.save(out_dir / "final", CheckpointKind.FINAL)
        hooks.on_checkpoint(ckpt, self.position.global_step, CheckpointKind.FINAL)
        logger.info(
            "trained to step %d/%d: %s", self.position.global_step, self.total_steps, self.metrics
        )
        return self._result(ckpt, stopped=False)

    # --- optimizer step --------------------------------------------------------------------

    def _step_or_recover(self, window: list[int]) -> dict[str, float] | None:
        """One optimizer step; on OOM, shrink the memory plan and return None to retry."""
        rng = rng_state()
        try:
            self.hooks.before_step(self.position.global_step)
            return self.optimizer_step(window)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            updating = self.updating
        # Out of the except block, the traceback no longer pins the failed step's tensors.
        self._recover_from_oom(rng, updating)
        return None

    def optimizer_step(self, window: list[int]) -> dict[str, float]:
        """Forward/backward each micro-batch of the window, then one clipped AdamW step."""
        import torch

        started = perf_counter()
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
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.hp.max_grad_norm)
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
                "lora_alpha and requeue the phase",
                param="hyperparameters",
            )
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
            "samples_per_s": len(window) / max(perf_counter() - started, 1e-9),
        }

    def _recover_from_oom(self, rng: dict[str, Any], updating: bool) -> None:
        import gc

        import torch

        old, failed_step = self.plan, self.position.global_step
        self.optimizer.zero_grad(set_to_none=True)
        self.updating = False
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        new = old.after_oom()  # raises OutOfMemory when nothing smaller is left
        self.apply_plan(new)
        if updating:
            # Weights or optimizer state may be half-updated: roll back to the last checkpoint.
            self._restore(self.restore_point)
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

    def apply_plan(self, plan: MemoryPlan) -> None:
        if plan.gradient_checkpointing and not self.plan.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        self.plan = plan

    # --- evaluate --------------------------------------------------------------------------

    def _evaluate_epoch(self, step: int) -> dict[str, float]:
        """Score the held-out samples; write a best checkpoint when the job's best improved."""
        scores = self.evaluate()
        if scores:
            self.validated += len(self.val_idx)
        self.metrics.update(scores)
        metric = self.best.metric
        if metric in scores and self.best.improved_by(scores[metric]):
            self.best = Best(metric, scores[metric], step)
            self.best_dir = self.save(self.out_dir / "best", CheckpointKind.BEST)
            self.hooks.on_checkpoint(self.best_dir, step, CheckpointKind.BEST)
        return scores

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

    # --- save ------------------------------------------------------------------------------

    def _checkpoint_due(self, end_of_epoch: bool) -> CheckpointKind | None:
        if end_of_epoch:
            return CheckpointKind.EPOCH
        every = self.hp.checkpoint_every_steps
        if every and self.position.global_step % every == 0:
            return CheckpointKind.STEP
        if monotonic() - self.last_save >= self.hp.checkpoint_interval_seconds:
            return CheckpointKind.TIME
        return None

    def _save_rolling(self, kind: CheckpointKind) -> Path:
        step = self.position.global_step
        path = self.out_dir / f"step-{step}"
        ckpt = self.save(path, kind)
        self.hooks.on_checkpoint(ckpt, step, kind)
        # The same step is written again after an OOM rollback; keep one entry per directory.
        self.rolling = prune_rolling(
            [p for p in self.rolling if p != path] + [path], self.hp.keep_last_checkpoints
        )
        self.restore_point = self._snapshot()
        self.last_save = monotonic()
        return ckpt

    def save(self, ckpt_dir: Path, kind: CheckpointKind) -> Path:
        position = self.position
        manifest = {
            "kind": kind,
            "step": position.global_step,
            "epoch": position.epoch,
            "steps_in_epoch": position.steps_in_epoch,
            "total_steps": position.total_steps,
            **self.metrics,
            **self.plan.describe(),
            "precision": self.precision.name,
            "best": asdict(self.best),
            "hyperparameters": self.hp.model_dump(),
        }
        return save_checkpoint(ckpt_dir, self.model, self._training_state(), manifest)

    def _training_state(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": rng_state(),
            "position": asdict(self.position),
            "best": asdict(self.best),
        }

    def _snapshot(self) -> dict[str, Any]:
        # Taken only when a checkpoint is written, not at every step.
        return snapshot(self.model, self._training_state())

    # --- resume ----------------------------------------------------------------------------

    def resume(self, resume_dir: Path, start_epoch: int, end_epoch: int) -> None:
        """Continue from a checkpoint anywhere in this call's range: the warmup's end for a
        final phase, or a mid-phase checkpoint when a phase whose worker died runs again."""
        manifest = read_manifest(resume_dir)
        self._load_training_state(load_checkpoint(resume_dir, self.model))
        position = self.position
        if position.total_steps != self.total_steps:
            raise CheckpointMismatch(
                f"checkpoint schedule has {position.total_steps} steps, this run "
                f"{self.total_steps}: artifact or hyperparameters differ",
                param=str(resume_dir),
            )
        inside = start_epoch <= position.epoch < end_epoch or (
            position.epoch == end_epoch and position.steps_in_epoch == 0
        )
        if not inside:
            raise CheckpointMismatch(
                f"checkpoint stands at epoch {position.epoch} step {position.steps_in_epoch}, "
                f"outside epochs [{start_epoch}, {end_epoch}]",
                param=str(resume_dir),
            )
        self.metrics = {k: manifest.get(k) for k in ("loss", "val_loss", "token_accuracy")}

    def continue_at(self, start_epoch: int) -> None:
        """Check that this live trainer (the previous phase's) stands where the call starts."""
        if self.position.epoch != start_epoch or self.position.steps_in_epoch != 0:
            raise CheckpointMismatch(
                f"the carried state stands at epoch {self.position.epoch} step "
                f"{self.position.steps_in_epoch}, not at the start of epoch {start_epoch}"
            )

    def _restore(self, saved: dict[str, Any]) -> None:
        self._load_training_state(restore_snapshot(self.model, saved))

    def _load_training_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        # A checkpoint from a bf16 or fp32 run has no scaler state; an fp16 run then starts a
        # fresh scaler, and a run without one ignores the saved state.
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        self.position = Position(**state["position"])
        self.best = Best.restored(state.get("best"), self.hp.best_metric)

    # --- what a call returns ---------------------------------------------------------------

    def _result(self, ckpt: Path, *, stopped: bool) -> TrainResult:
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
            micro_batch_size=self.plan.micro_batch_size,
            gradient_accumulation=self.plan.accumulation,
            gradient_checkpointing=self.plan.gradient_checkpointing,
            precision=self.precision.name,
            oom_recoveries=self.oom_recoveries,
            samples=self.samples_done,
            tokens=self.tokens_done,
            validation_samples=self.validated,
            carry=None if stopped else self,
        )


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def train_epochs(
    *,
    artifact_dir: Path,
    model_dir: str,
    hyperparameters: Hyperparameters,
    start_epoch: int,
    end_epoch: int,
    resume_dir: Path | None,
    out_dir: Path,
    hooks: TrainHooks,
    carry: Trainer | None = None,
) -> TrainResult:
    """Train epochs [start_epoch, end_epoch), resuming from resume_dir if given.

    Without resume_dir, start_epoch must be 0. With it, training continues from the
    checkpoint's position, which must lie within [start_epoch, end_epoch]. With `carry` (the
    previous call's result in this process), training continues from that live state exactly
    as it would from its final checkpoint, without loading anything.
    """
    hp = hyperparameters
    resuming = resume_dir is not None or carry is not None
    # An empty range is fine for a resumed run: a final phase with no epochs left
    # (warmup_epochs == total_epochs) only republishes the warmup's state and evaluates it.
    if not 0 <= start_epoch <= end_epoch <= hp.total_epochs or (
        start_epoch == end_epoch and not resuming
    ):
        raise ValueError(
            f"need 0 <= start_epoch < end_epoch <= total_epochs ({hp.total_epochs}) "
            f"(or start_epoch == end_epoch when resuming), got [{start_epoch}, {end_epoch})"
        )
    if resume_dir is None and carry is None and start_epoch != 0:
        raise CheckpointMismatch(f"start_epoch {start_epoch} needs a checkpoint to resume")
    logger.info("train epochs [%d, %d) hyperparameters=%s", start_epoch, end_epoch, hp.model_dump())

    if carry is not None:
        trainer = carry
        trainer.continue_at(start_epoch)
    else:
        trainer = Trainer(Path(artifact_dir), model_dir, hp)
        if resume_dir is None:
            # Seeded once the model is built, so whatever loading it draws from the RNG does
            # not move the stream training uses (a resume restores that stream instead).
            _seed_everything(hp.seed)
        else:
            trainer.resume(Path(resume_dir), start_epoch, end_epoch)
    return trainer.train(end_epoch, Path(out_dir), hooks)
