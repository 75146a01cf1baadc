"""What the final phase exports: this run's best, the best it started from, or its last."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from orchestrator.hyperparameters import Hyperparameters
from orchestrator.runs import Claim
from orchestrator.storage import LocalStore
from worker.phases import _best_checkpoint_dir
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
