"""What the phases do with their inputs: the preprocess phase's validation set, and what the
final phase exports (this run's best, the best it started from, or its last)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.hyperparameters import Hyperparameters
from orchestrator.runs import Claim
from orchestrator.storage import LocalStore
from tests.factories import zip_folder
from tests.worker.conftest import write_corner_dataset
from worker.phases import Handover, _best_checkpoint_dir, run_preprocess
from worker.recipe.train import TrainResult
from worker.timing import PhaseClock

WARMUP_BEST = "jobs/j1/warmup/a1/best-2"


def _claim(best_key: str) -> Claim:
    return Claim(
        job_id="j1",
        phase="final",
        attempt=1,
        pool="a100",
        base_model="tiny",
        hyperparameters=Hyperparameters(),
        input_key="jobs/j1/warmup/a1/final",
        artifact_key="jobs/j1/preprocess/a1",
        resume_key="",
        best_key=best_key,
        run_prefix="jobs/j1/final/a1",
        start_epoch=2,
        end_epoch=3,
    )


def _chosen(tmp_path: Path, claim: Claim, **result: Any) -> Path:
    store = LocalStore(tmp_path / "store")
    store.put_bytes(f"{WARMUP_BEST}/adapter/adapter_model.safetensors", b"warmup's best")
    store.put_bytes(f"{WARMUP_BEST}/manifest.json", b"{}")
    trained = TrainResult(
        stopped=False,
        global_step=3,
        last_loss=0.1,
        val_loss=0.5,
        checkpoint_dir=tmp_path / "last",
        **result,
    )
    reporter: Any = SimpleNamespace(clock=PhaseClock())
    return _best_checkpoint_dir(claim, store, tmp_path / "work", reporter, trained)


def test_final_epochs_that_never_beat_the_warmup_export_the_warmups_best(tmp_path: Path) -> None:
    chosen = _chosen(tmp_path, _claim(WARMUP_BEST), best_step=2)
    assert (chosen / "adapter" / "adapter_model.safetensors").read_bytes() == b"warmup's best"


def test_a_best_written_by_this_run_is_exported_as_it_is(tmp_path: Path) -> None:
    own = tmp_path / "out" / "best"
    chosen = _chosen(tmp_path, _claim(WARMUP_BEST), best_step=3, best_checkpoint_dir=own)
    assert chosen == own


def test_without_a_validation_set_the_last_checkpoint_is_exported(tmp_path: Path) -> None:
    assert _chosen(tmp_path, _claim("")) == tmp_path / "last"


def _held_out_corners(root: Path) -> Path:
    """Three corner samples under the training set's file names, their answers marked."""
    write_corner_dataset(root, n=3)
    annotations = json.loads((root / "annotations.json").read_text())
    for row in annotations.values():
        row["answer"] += " (held out)"
    (root / "annotations.json").write_text(json.dumps(annotations))
    return root


def test_preprocess_holds_out_exactly_the_validation_data_set(
    tmp_path: Path, tiny_model_dir: str
) -> None:
    from transformers import AutoProcessor

    from worker.recipe.data import IGNORE_INDEX
    from worker.recipe.preprocess import load_artifact

    store = LocalStore(tmp_path / "store")
    store.put_bytes("jobs/j1/dataset/dataset.zip", zip_folder(write_corner_dataset(tmp_path / "t")))
    store.put_bytes("jobs/j1/dataset/validation.zip", zip_folder(_held_out_corners(tmp_path / "v")))
    claim = replace(
        _claim(""),
        phase="preprocess",
        pool="t4",
        input_key="jobs/j1/dataset/dataset.zip",
        artifact_key="",
        run_prefix="jobs/j1/preprocess/a1",
        # Augmentation on: it must reach the training samples only.
        hyperparameters=Hyperparameters.model_validate({"seed": 3}),
        validation_input_key="jobs/j1/dataset/validation.zip",
        validation_dataset_id="v1",
    )
    published: list[tuple[str, str]] = []
    reporter: Any = SimpleNamespace(
        clock=PhaseClock(),
        checkpoint=lambda _dir, key, *, kind, step: published.append((key, kind)),
    )
    handover, work = Handover(), tmp_path / "work"
    work.mkdir()
    key, summary = run_preprocess(claim, store, work, reporter, handover, tiny_model_dir)
    assert published == [(key, "artifact")]
    assert handover.artifact_dir is not None
    manifest, samples = load_artifact(handover.artifact_dir)

    trained, originals = 6, 6 + 3
    assert manifest["val"] == [6, 7, 8]
    assert manifest["train"] == [*range(trained), *range(originals, len(samples))]
    assert manifest["augmentation"]["augmented_samples"] == trained == len(samples) - originals
    copies = manifest["token_counts"]["per_sample"][originals:]
    assert {c["source"] for c in copies} == set(range(trained))
    assert [manifest["files"][i] for i in manifest["val"]] == [
        f"validation:case{i}.png" for i in range(3)
    ]
    validation = manifest["validation"]
    assert (validation["strategy"], validation["count"], validation["dataset_id"]) == (
        "validation_dataset",
        3,
        "v1",
    )
    assert summary["validation"] == validation
    tokenizer = AutoProcessor.from_pretrained(tiny_model_dir).tokenizer

    def answer(index: int) -> str:
        labels = samples[index]["labels"]
        return str(tokenizer.decode(labels[labels != IGNORE_INDEX]))

    assert all("(held out)" in answer(i) for i in manifest["val"])
    assert not any("(held out)" in answer(i) for i in manifest["train"])
