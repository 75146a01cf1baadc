"""Exact resume: a run stopped or killed at any step, or split at the phase boundary, and run
again from its latest checkpoint gives the uninterrupted run's losses and adapter (1e-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.recipe_helpers import (
    HP,
    STEPS_PER_EPOCH,
    Killed,
    Recorder,
    assert_same_adapter,
    assert_same_losses,
    manifest,
    train,
    train_in_subprocess,
)
from worker.recipe.checkpoint import CheckpointMismatch

FullRun = tuple[Any, Recorder]


def _after(losses: dict[int, float], step: int) -> dict[int, float]:
    return {s: v for s, v in losses.items() if s > step}


def test_phase_boundary_is_invisible(
    full_run: FullRun, train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    """Warmup (epochs 0..2) here, final (2..3) in a fresh process, handing over one directory."""
    reference, recorder = full_run
    warmup = Recorder()
    first = train(train_artifact_dir, tiny_model_dir, tmp_path / "warmup", 0, 2, recorder=warmup)
    assert first.global_step == 2 * STEPS_PER_EPOCH
    assert manifest(first.checkpoint_dir)["epoch"] == 2
    handed_over = tmp_path / "handover"
    first.checkpoint_dir.rename(handed_over)

    resumed = train_in_subprocess(
        train_artifact_dir, tiny_model_dir, handed_over, tmp_path / "final", 2, 3, HP
    )
    assert resumed["step"] == reference.global_step == 3 * STEPS_PER_EPOCH
    final_losses = {s: loss for s, _, loss, _ in resumed["losses"]}
    assert_same_losses({**warmup.losses(), **final_losses}, recorder.losses())
    # One schedule across the boundary: the final phase's LRs continue the warmup's.
    want_lr = {s: m["lr"] for s, _, _, m in recorder.progress}
    assert all(abs(lr - want_lr[s]) <= 1e-12 for s, _, _, lr in resumed["losses"])
    assert_same_adapter(Path(resumed["dir"]), reference.checkpoint_dir)


def test_carried_state_continues_like_the_checkpoint(
    full_run: FullRun, train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    """Warmup and final fused in one process: the final call takes the warmup's live state
    (no reload) and ends where the uninterrupted run does, bit for bit."""
    from worker.recipe.train import train_epochs

    reference, recorder = full_run
    warmup, final = Recorder(), Recorder()
    first = train(train_artifact_dir, tiny_model_dir, tmp_path / "warmup", 0, 2, recorder=warmup)
    assert first.carry is not None
    second = train_epochs(
        artifact_dir=train_artifact_dir,
        model_dir=tiny_model_dir,
        hyperparameters=Hyperparameters.model_validate(HP),
        start_epoch=2,
        end_epoch=3,
        resume_dir=None,
        out_dir=tmp_path / "final",
        hooks=final.hooks(),
        carry=first.carry,
    )
    assert second.global_step == reference.global_step
    assert_same_losses({**warmup.losses(), **final.losses()}, recorder.losses())
    assert_same_adapter(second.checkpoint_dir, reference.checkpoint_dir, atol=0.0)


def test_carried_state_must_stand_at_the_start_epoch(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    from worker.recipe.train import train_epochs

    first = train(train_artifact_dir, tiny_model_dir, tmp_path / "warmup", 0, 1)
    assert first.carry is not None
    with pytest.raises(CheckpointMismatch, match="not at the start of epoch 2"):
        train_epochs(
            artifact_dir=train_artifact_dir,
            model_dir=tiny_model_dir,
            hyperparameters=Hyperparameters.model_validate(HP),
            start_epoch=2,
            end_epoch=3,
            resume_dir=None,
            out_dir=tmp_path / "final",
            hooks=Recorder().hooks(),
            carry=first.carry,
        )


def test_stop_mid_epoch_resumes_exactly(
    full_run: FullRun, train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    reference, recorder = full_run
    stopping = Recorder(stop_after_steps=3)  # mid-epoch 1
    stopped = train(train_artifact_dir, tiny_model_dir, tmp_path / "w", 0, 2, recorder=stopping)
    assert stopped.stopped and stopped.global_step == 3
    assert stopped.checkpoint_dir == tmp_path / "w" / "step-3"
    saved = manifest(stopped.checkpoint_dir)
    assert (saved["kind"], saved["epoch"], saved["steps_in_epoch"]) == ("stop", 1, 1)
    assert stopping.checkpoints[-1] == (stopped.checkpoint_dir, 3, "stop")

    # The final phase's call, fed the stopped warmup's checkpoint: it starts mid-epoch 1.
    resumed = Recorder()
    result = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "r",
        1,
        3,
        resume_dir=stopped.checkpoint_dir,
        recorder=resumed,
    )
    assert not result.stopped and result.global_step == reference.global_step
    assert_same_losses(resumed.losses(), _after(recorder.losses(), 3))
    assert_same_adapter(result.checkpoint_dir, reference.checkpoint_dir)


def test_killed_phase_reruns_from_its_latest_step_checkpoint(
    full_run: FullRun, train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    """The worker dies before step 4 of the whole run (no stop checkpoint); the phase runs
    again, in a fresh process, from the newest step checkpoint, over its own epoch range."""
    reference, recorder = full_run
    hp = {**HP, "checkpoint_every_steps": 1, "keep_last_checkpoints": 2}
    dying = Recorder(kill_before_step=3)
    with pytest.raises(Killed):
        train(train_artifact_dir, tiny_model_dir, tmp_path / "a1", 0, 3, recorder=dying, hp=hp)
    latest = dying.checkpoints[-1]
    assert latest[1:] == (3, "step")  # mid-epoch 1: one of its two steps done
    assert sorted(p.name for p in (tmp_path / "a1").glob("step-*")) == ["step-2", "step-3"]

    rerun = train_in_subprocess(
        train_artifact_dir, tiny_model_dir, latest[0], tmp_path / "a2", 0, 3, hp
    )
    assert_same_losses({s: loss for s, _, loss, _ in rerun["losses"]}, _after(recorder.losses(), 3))
    assert_same_adapter(Path(rerun["dir"]), reference.checkpoint_dir)


def test_checkpoint_outside_the_epoch_range_is_refused(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    stopped = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "w",
        0,
        3,
        recorder=Recorder(stop_after_steps=3),
    )  # stands at epoch 1, step 1
    with pytest.raises(CheckpointMismatch, match="outside epochs"):
        train(train_artifact_dir, tiny_model_dir, tmp_path / "x", 2, 3, stopped.checkpoint_dir)
    with pytest.raises(CheckpointMismatch, match="outside epochs"):
        train(train_artifact_dir, tiny_model_dir, tmp_path / "y", 0, 1, stopped.checkpoint_dir)


def test_checkpoint_at_the_range_end_only_writes_the_final(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    """A warmup whose worker died after its last epoch checkpoint but before the final one."""
    epoch_end = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "w",
        0,
        2,
        recorder=Recorder(stop_after_steps=2),
    )  # stops at the epoch-1 checkpoint
    assert manifest(epoch_end.checkpoint_dir)["kind"] == "epoch"
    recorder = Recorder()
    result = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "r",
        0,
        1,
        epoch_end.checkpoint_dir,
        recorder=recorder,
    )
    assert recorder.progress == [] and recorder.kinds() == [("final", 2, "final")]
    assert not result.stopped and result.global_step == 2
    assert result.val_loss == manifest(epoch_end.checkpoint_dir)["val_loss"] is not None
