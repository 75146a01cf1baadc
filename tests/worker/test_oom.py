"""OOM recovery, by injection on the CPU: halve the micro-batch, keep the effective batch, then
gradient checkpointing, then a clear out_of_memory error.

The recovered runs are compared with an un-OOMed run with lora_dropout 0: dropout draws one
mask per micro-batch shape, so with dropout a different split is a different (equally valid)
random stream. Without it the two runs do the same arithmetic on the same samples per optimizer
step with the same normalisation; only the padding of each micro-batch and the order of the
gradient sums differ, which moves float32 results by ~1e-7, far inside 1e-5.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.recipe_helpers import HP, Recorder, assert_same_adapter, assert_same_losses
from worker.recipe.oom import MemoryPlan, OutOfMemory, is_out_of_memory
from worker.recipe.train import TrainHooks, TrainResult, train_epochs

NO_DROPOUT = {**HP, "lora_dropout": 0.0}


class OutOfMemoryError(RuntimeError):
    """Named like torch.cuda.OutOfMemoryError, which a CPU run cannot raise for real."""


def _run(
    artifact: Path, model: str, out: Path, hooks: TrainHooks, hp: dict[str, Any] | None = None
) -> TrainResult:
    return train_epochs(
        artifact_dir=artifact,
        model_dir=model,
        hyperparameters=Hyperparameters.model_validate(hp or NO_DROPOUT),
        start_epoch=0,
        end_epoch=3,
        resume_dir=None,
        out_dir=out,
        hooks=hooks,
    )


def _oom_before(steps: list[int]) -> Callable[[int], None]:
    """Fails the first attempt at each listed step (repeats in the list fail it again)."""
    pending = list(steps)

    def before_step(step: int) -> None:
        if step in pending:
            pending.remove(step)
            raise OutOfMemoryError(f"injected at step {step}")

    return before_step


@pytest.fixture(scope="module")
def no_dropout_run(
    tmp_path_factory: pytest.TempPathFactory, train_artifact_dir: Path, tiny_model_dir: str
) -> tuple[TrainResult, Recorder]:
    recorder = Recorder()
    out = tmp_path_factory.mktemp("no-dropout")
    return _run(train_artifact_dir, tiny_model_dir, out, recorder.hooks()), recorder


def test_oom_type_and_plan() -> None:
    import torch

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(OutOfMemoryError())
    assert not is_out_of_memory(RuntimeError("CUDA error: device-side assert"))
    plan = MemoryPlan(micro_batch_size=3, effective_batch=12, gradient_checkpointing=False)
    shrunk = [plan.after_oom(), plan.after_oom().after_oom()]
    assert [(p.micro_batch_size, p.accumulation, p.gradient_checkpointing) for p in shrunk] == [
        (1, 12, False),
        (1, 12, True),
    ]
    with pytest.raises(OutOfMemory):
        shrunk[-1].after_oom()


def test_oom_in_forward_halves_the_micro_batch_and_keeps_the_numbers(
    no_dropout_run: tuple[TrainResult, Recorder],
    train_artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
) -> None:
    reference, ref_recorder = no_dropout_run
    recorder = Recorder()
    hooks = recorder.hooks()
    hooks.before_step = _oom_before([1])
    result = _run(train_artifact_dir, tiny_model_dir, tmp_path, hooks)

    assert recorder.events == [
        (
            "oom_recovered",
            {
                "step": 1,
                "resumed_from_step": 1,
                "old_micro_batch_size": 2,
                "old_gradient_accumulation": 2,
                "new_micro_batch_size": 1,
                "new_gradient_accumulation": 4,
                "gradient_checkpointing": False,
            },
        )
    ]
    assert (result.micro_batch_size, result.gradient_accumulation) == (1, 4)
    assert result.oom_recoveries == 1 and not result.stopped
    assert result.global_step == reference.global_step
    # Each optimizer step saw the same samples: the same label-token counts.
    tokens = [m["tokens"] for *_, m in recorder.progress]
    assert tokens == [m["tokens"] for *_, m in ref_recorder.progress]
    assert_same_losses(recorder.losses(), ref_recorder.losses())
    assert_same_adapter(result.checkpoint_dir, reference.checkpoint_dir)


def test_oom_in_the_update_rolls_back_to_the_last_checkpoint(
    no_dropout_run: tuple[TrainResult, Recorder],
    train_artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An OOM inside the optimizer step may leave weights half-updated: the run goes back to
    its last checkpoint (step 2, the epoch end) and redoes step 3 with the smaller plan."""
    import torch

    reference, ref_recorder = no_dropout_run
    clip = torch.nn.utils.clip_grad_norm_
    calls: Iterator[int] = iter(range(100))

    def clip_failing_at_step_four(*args: Any, **kwargs: Any) -> Any:
        norm = clip(*args, **kwargs)
        if next(calls) == 3:  # the 4th update, after gradients were clipped in place
            raise OutOfMemoryError("injected in the update of step 4")
        return norm

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip_failing_at_step_four)
    recorder = Recorder()
    result = _run(train_artifact_dir, tiny_model_dir, tmp_path, recorder.hooks())

    [(kind, data)] = recorder.events
    assert (kind, data["step"], data["resumed_from_step"]) == ("oom_recovered", 3, 2)
    steps = [s for s, *_ in recorder.progress]
    assert steps == [1, 2, 3, 3, 4, 5, 6]  # step 3 is reported again after the rollback
    assert_same_losses(recorder.losses(), ref_recorder.losses())
    assert_same_adapter(result.checkpoint_dir, reference.checkpoint_dir)


def test_repeated_oom_ends_in_gradient_checkpointing_then_out_of_memory(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    recorder = Recorder()
    hooks = recorder.hooks()
    hooks.before_step = _oom_before([0, 0])
    result = _run(train_artifact_dir, tiny_model_dir, tmp_path / "fits", hooks)
    plans = [
        (d["new_micro_batch_size"], d["new_gradient_accumulation"], d["gradient_checkpointing"])
        for _, d in recorder.events
    ]
    assert plans == [(1, 4, False), (1, 4, True)]
    assert result.gradient_checkpointing and result.micro_batch_size == 1
    assert not result.stopped and result.global_step == 6

    def always_oom(step: int) -> None:
        raise OutOfMemoryError("injected")

    failing = Recorder()
    hooks = failing.hooks()
    hooks.before_step = always_oom
    with pytest.raises(OutOfMemory) as excinfo:
        _run(train_artifact_dir, tiny_model_dir, tmp_path / "never", hooks)
    assert excinfo.value.code == "out_of_memory"
    assert "micro-batch 1 with gradient checkpointing" in excinfo.value.message
    assert len(failing.events) == 2 and failing.progress == []
