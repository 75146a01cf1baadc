"""What each phase does between claim and completion. Inputs come only from object storage.

torch, transformers and peft are imported inside the functions: the worker's parent process
must stay free of CUDA.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.datasets import extract_dataset
from orchestrator.runs import Claim
from orchestrator.storage import ObjectStore, download_dir
from worker.reporting import Reporter


class PhaseStopped(Exception):
    """The run stopped early at the user's request (or because it lost its lease)."""


PhaseOutput = tuple[str, dict[str, Any]]  # (output key, summary for the phase_succeeded event)


def run_preprocess(claim: Claim, store: ObjectStore, work: Path, reporter: Reporter
                   ) -> PhaseOutput:
    from worker.recipe.preprocess import build_artifact

    zip_path = work / "dataset.zip"
    store.get_file(claim.input_key, zip_path)
    dataset_dir = extract_dataset(zip_path, work / "dataset")
    artifact_dir = work / "artifact"
    manifest = build_artifact(dataset_dir, claim.base_model, artifact_dir,
                              seed=int(claim.hyperparameters["seed"]))
    reporter.checkpoint(artifact_dir, claim.output_prefix, kind="artifact", step=0)
    return claim.output_prefix, {"num_samples": manifest.get("num_samples")}


def _train(claim: Claim, store: ObjectStore, work: Path, reporter: Reporter,
           resume_prefix: str | None) -> tuple[Any, Path]:
    from worker.recipe.train import TrainHooks, train_epochs

    artifact_dir = work / "artifact"
    download_dir(store, claim.artifact_key, artifact_dir)
    resume_dir = None
    if resume_prefix:
        resume_dir = work / "resume"
        download_dir(store, resume_prefix, resume_dir)

    def on_checkpoint(ckpt_dir: Path, step: int, kind: str) -> None:
        reporter.checkpoint(ckpt_dir, f"{claim.output_prefix}/step-{step}", kind=kind, step=step)

    hooks = TrainHooks(on_progress=reporter.progress, should_stop=reporter.should_stop,
                       on_checkpoint=on_checkpoint)
    result = train_epochs(artifact_dir=artifact_dir, model_dir=claim.base_model,
                          hyperparameters=claim.hyperparameters, start_epoch=claim.start_epoch,
                          end_epoch=claim.end_epoch, resume_dir=resume_dir,
                          out_dir=work / "out", hooks=hooks)
    if result.stopped:
        raise PhaseStopped(f"stopped at step {result.global_step}")
    return result, artifact_dir


def _summary(result: Any) -> dict[str, Any]:
    return {"global_step": result.global_step, "loss": result.last_loss,
            "val_loss": result.val_loss}


def run_warmup(claim: Claim, store: ObjectStore, work: Path, reporter: Reporter) -> PhaseOutput:
    result, _ = _train(claim, store, work, reporter, resume_prefix=None)
    key = f"{claim.output_prefix}/step-{result.global_step}"
    if not store.exists(f"{key}/manifest.json"):
        reporter.checkpoint(result.checkpoint_dir, key, kind="final", step=result.global_step)
    return key, _summary(result)


def run_final(claim: Claim, store: ObjectStore, work: Path, reporter: Reporter) -> PhaseOutput:
    from worker.recipe.evaluate import evaluate_and_export

    result, artifact_dir = _train(claim, store, work, reporter, resume_prefix=claim.input_key)
    export_dir = work / "export"
    evaluation = evaluate_and_export(artifact_dir=artifact_dir, model_dir=claim.base_model,
                                     checkpoint_dir=result.checkpoint_dir, out_dir=export_dir)
    reporter.checkpoint(export_dir, claim.output_prefix, kind="adapter",
                        step=result.global_step)
    return claim.output_prefix, {**_summary(result), "evaluation": evaluation}


PHASE_RUNNERS: dict[str, Callable[[Claim, ObjectStore, Path, Reporter], PhaseOutput]] = {
    "preprocess": run_preprocess,
    "warmup": run_warmup,
    "final": run_final,
}
