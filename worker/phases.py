"""What each phase does between claim and completion. Inputs come only from object storage.

torch, transformers and peft are imported inside the functions: the worker's parent process
must stay free of CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.dataset_archive import extract_dataset
from orchestrator.layout import (
    ADAPTER_DIR,
    MANIFEST_FILE,
    CheckpointKind,
    artifact_key,
    checkpoint_key,
    export_key,
)
from orchestrator.runs import Claim
from orchestrator.settings import get_settings
from orchestrator.storage import ObjectStore, download_dir
from worker.recipe.export import write_model_card
from worker.reporting import Reporter

if TYPE_CHECKING:
    from worker.recipe.train import Trainer, TrainResult


class PhaseStopped(Exception):
    """The run stopped early at the user's request (or because it lost its lease)."""


PhaseOutput = tuple[str, dict[str, Any]]  # (output key, summary for the phase_succeeded event)


@dataclass
class Handover:
    """What this process already holds when it runs the next phase itself (same-pool fusion):
    the artifact on local disk and the training run's live state, neither fetched again."""

    artifact_dir: Path | None = None
    carry: Trainer | None = None  # the training state of the last finished training call
    carry_key: str = ""  # the checkpoint key that state was published under


def _download(reporter: Reporter, store: ObjectStore, key: str, local_dir: Path) -> None:
    with reporter.clock.measure("input_download"):
        paths = download_dir(store, key, local_dir)
    reporter.clock.count(input_bytes=sum(p.stat().st_size for p in paths))


def run_preprocess(
    claim: Claim,
    store: ObjectStore,
    work: Path,
    reporter: Reporter,
    handover: Handover,
    model_dir: str,
) -> PhaseOutput:
    clock = reporter.clock
    with clock.measure("startup"):
        from worker.recipe.preprocess import build_artifact

    zip_path = work / "dataset.zip"
    validation_zip = work / "validation.zip" if claim.validation_input_key else None
    with clock.measure("input_download"):
        store.get_file(claim.input_key, zip_path)
        if validation_zip is not None:
            store.get_file(claim.validation_input_key, validation_zip)
    clock.count(
        input_bytes=sum(p.stat().st_size for p in (zip_path, validation_zip) if p is not None)
    )
    # Building the artifact is this phase's work, as the loop is a training phase's.
    with clock.measure("train"):
        dataset_dir = extract_dataset(zip_path, work / "dataset")
        validation_dir = (
            extract_dataset(validation_zip, work / "validation") if validation_zip else None
        )
        artifact_dir = work / "artifact"
        manifest = build_artifact(
            dataset_dir,
            model_dir,
            artifact_dir,
            hyperparameters=claim.hyperparameters,
            compact_images=get_settings().artifact_compact_images,
            validation_dir=validation_dir,
            validation_dataset_id=claim.validation_dataset_id or None,
        )
    clock.count(
        samples=int(manifest.get("num_samples") or 0),
        tokens=int((manifest.get("token_counts") or {}).get("total") or 0),
    )
    output_key = artifact_key(claim.run_prefix)
    reporter.checkpoint(artifact_dir, output_key, kind=CheckpointKind.ARTIFACT, step=0)
    handover.artifact_dir = artifact_dir
    return output_key, {
        "num_samples": manifest.get("num_samples"),
        "validation": manifest.get("validation"),
        "augmented_samples": (manifest.get("augmentation") or {}).get("augmented_samples"),
    }


def _train(
    claim: Claim,
    store: ObjectStore,
    work: Path,
    reporter: Reporter,
    handover: Handover,
    model_dir: str,
    start_from: str | None,
) -> tuple[TrainResult, Path]:
    """Train the claim's epochs. A re-run (lost lease, OOM'd worker) continues from this
    phase's own latest checkpoint; otherwise from `start_from` (the previous phase's output),
    which this process may still hold live when it ran the previous phase itself."""
    clock = reporter.clock
    with clock.measure("startup"):
        from worker.recipe.train import TrainHooks, train_epochs

    artifact_dir = handover.artifact_dir
    if artifact_dir is None:
        artifact_dir = work / "artifact"
        _download(reporter, store, claim.artifact_key, artifact_dir)
    resume_key = claim.resume_key or start_from
    carry = handover.carry if resume_key and resume_key == handover.carry_key else None
    handover.carry = None  # the state moves on into this call; nothing else may reuse it
    resume_dir = None
    if resume_key and carry is None:
        resume_dir = work / "resume"
        _download(reporter, store, resume_key, resume_dir)

    def on_checkpoint(ckpt_dir: Path, step: int, kind: CheckpointKind) -> None:
        key = checkpoint_key(claim.run_prefix, kind, step)
        reporter.checkpoint(ckpt_dir, key, kind=kind, step=step)

    def on_ready() -> None:
        clock.switch("train")
        if carry is None:  # a fused phase goes on with the model already in memory
            reporter.event("model_loaded", {"model": claim.base_model})

    hooks = TrainHooks(
        on_progress=reporter.progress,
        should_stop=reporter.should_stop,
        on_checkpoint=on_checkpoint,
        on_event=reporter.event,
        on_ready=on_ready,
    )
    # The base model loads inside train_epochs: startup until on_ready, then the loop.
    with clock.measure("startup"):
        result = train_epochs(
            artifact_dir=artifact_dir,
            model_dir=model_dir,
            hyperparameters=claim.hyperparameters,
            start_epoch=claim.start_epoch,
            end_epoch=claim.end_epoch,
            resume_dir=resume_dir,
            out_dir=work / "out",
            hooks=hooks,
            carry=carry,
        )
    clock.count(
        samples=result.samples, tokens=result.tokens, validation_samples=result.validation_samples
    )
    clock.note(precision=result.precision, micro_batch=result.micro_batch_size)
    if result.stopped:
        raise PhaseStopped(f"stopped at step {result.global_step}")
    handover.artifact_dir = artifact_dir
    return result, artifact_dir


def _summary(result: TrainResult) -> dict[str, Any]:
    return {
        "global_step": result.global_step,
        "loss": result.last_loss,
        "val_loss": result.val_loss,
        "best_metric": result.best_metric,
        "best_value": result.best_value,
        "best_step": result.best_step,
        "micro_batch_size": result.micro_batch_size,
        "gradient_accumulation": result.gradient_accumulation,
        "precision": result.precision,
        "oom_recoveries": result.oom_recoveries,
    }


def run_warmup(
    claim: Claim,
    store: ObjectStore,
    work: Path,
    reporter: Reporter,
    handover: Handover,
    model_dir: str,
) -> PhaseOutput:
    result, _ = _train(claim, store, work, reporter, handover, model_dir, start_from=None)
    # The loop handed its final checkpoint to on_checkpoint, which published it under this key.
    output_key = checkpoint_key(claim.run_prefix, CheckpointKind.FINAL, result.global_step)
    handover.carry, handover.carry_key = result.carry, output_key
    return output_key, _summary(result)


def _best_checkpoint_dir(
    claim: Claim, store: ObjectStore, work: Path, reporter: Reporter, result: TrainResult
) -> Path:
    """The checkpoint to export: this run's best, the best it started from (the warmup's, when
    the final epochs never beat it), or the last one when there is no validation set."""
    if result.best_checkpoint_dir is not None:
        return Path(result.best_checkpoint_dir)
    if result.best_step is not None and claim.best_key:
        target = work / "best"
        _download(reporter, store, claim.best_key, target)
        return target
    return Path(result.checkpoint_dir)


def run_final(
    claim: Claim,
    store: ObjectStore,
    work: Path,
    reporter: Reporter,
    handover: Handover,
    model_dir: str,
) -> PhaseOutput:
    from worker.recipe.evaluate import evaluate_and_export

    result, artifact_dir = _train(
        claim, store, work, reporter, handover, model_dir, start_from=claim.input_key
    )
    export_dir = work / "export"
    best_dir = _best_checkpoint_dir(claim, store, work, reporter, result)
    clock = reporter.clock
    with clock.measure("evaluate"):
        report = evaluate_and_export(
            artifact_dir=artifact_dir,
            model_dir=model_dir,
            checkpoint_dir=best_dir,
            out_dir=export_dir,
            base_model_name=claim.base_model,
            hyperparameters=claim.hyperparameters,
            on_export=lambda: clock.switch("export"),
        )
    clock.count(validation_samples=int(report["num_samples"]))
    write_adapter_card(claim, artifact_dir, export_dir, report)
    output_key = export_key(claim.run_prefix)
    reporter.checkpoint(
        export_dir, output_key, kind=CheckpointKind.ADAPTER, step=result.global_step
    )
    reporter.event("evaluation", report["summary"])
    return output_key, _summary(result)


def write_adapter_card(
    claim: Claim, artifact_dir: Path, export_dir: Path, report: dict[str, Any]
) -> None:
    """The adapter's card: base model by its registered name, data set, settings, evaluation."""
    manifest = json.loads((artifact_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    write_model_card(
        export_dir / ADAPTER_DIR,
        base_model=claim.base_model,
        dataset={
            "id": claim.dataset_id or None,
            "name": claim.dataset_name or None,
            "num_samples": manifest["num_samples"],
            "train_samples": len(manifest["train"]),
            "val_samples": len(manifest["val"]),
        },
        hyperparameters=claim.hyperparameters.model_dump(mode="json"),
        evaluation=report,
    )


# Each runs one claim: (claim, store, scratch dir, reporter, handover, the base model's local
# directory as the runner resolved it once for the run).
PhaseRunner = Callable[[Claim, ObjectStore, Path, Reporter, Handover, str], PhaseOutput]
PHASE_RUNNERS: dict[str, PhaseRunner] = {
    "preprocess": run_preprocess,
    "warmup": run_warmup,
    "final": run_final,
}
