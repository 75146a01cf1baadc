"""The training loop on the tiny model: loss, schedule, checkpoint kinds and pruning, best
checkpoint across phases, gradient checkpointing, precision choice and the fp16 scaler path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.recipe_helpers import (
    HP,
    Recorder,
    assert_same_adapter,
    assert_same_losses,
    manifest,
    train,
)
from worker.recipe import train as train_module
from worker.recipe.precision import (
    DeviceFacts,
    Precision,
    PrecisionUnsupported,
    choose_precision,
)
from worker.recipe.schedule import lr_warmup_steps, warmup_cosine
from worker.recipe.train import train_epochs

CKPT_FILES = ["adapter", "manifest.json", "training_state.pt"]


def test_schedule_warms_up_then_decays() -> None:
    factor = warmup_cosine(2, 10)
    values = [factor(s) for s in range(10)]
    assert values[:3] == [0.5, 1.0, 1.0]
    assert values == sorted(values[:2]) + sorted(values[2:], reverse=True)
    assert 0 < values[-1] < 0.05
    assert [lr_warmup_steps(r, 6) for r in (0.0, 0.01, 0.1, 0.5)] == [0, 1, 1, 3]
    assert warmup_cosine(0, 10)(0) == 1.0


def test_training_lowers_loss_and_writes_epoch_best_final(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    hp = {**HP, "batch_size": 1, "gradient_accumulation": 1, "total_epochs": 2}
    recorder = Recorder()
    result = train(train_artifact_dir, tiny_model_dir, tmp_path, 0, 2, recorder=recorder, hp=hp)
    losses = {e: [m["loss"] for _, _, ep, m in recorder.progress if ep == e] for e in (0, 1)}
    assert len(losses[0]) == len(losses[1]) == 5
    assert sum(losses[1]) / 5 < sum(losses[0]) / 5 - 0.1
    val = [m["val_loss"] for *_, m in recorder.progress if "val_loss" in m]
    assert len(val) == 2 and val[1] < val[0]
    assert result.global_step == 10 and not result.stopped
    assert recorder.kinds() == [
        ("best", 5, "best"),
        ("step-5", 5, "epoch"),
        ("best", 10, "best"),
        ("final", 10, "final"),
    ]
    assert (result.best_step, result.best_value, result.best_checkpoint_dir) == (
        10,
        val[1],
        tmp_path / "best",
    )
    final = manifest(result.checkpoint_dir)
    assert (final["kind"], final["step"], final["epoch"], final["val_loss"]) == (
        "final",
        10,
        2,
        val[1],
    )
    assert final["best"] == {"metric": "val_loss", "value": val[1], "step": 10}
    assert (final["micro_batch_size"], final["gradient_accumulation"], final["precision"]) == (
        1,
        1,
        "fp32",
    )
    assert sorted(p.name for p in result.checkpoint_dir.iterdir()) == CKPT_FILES


def test_step_and_time_checkpoints_keep_the_last_k(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A clock that reads 10 s per optimizer step done; checkpoints every 15 s and 4 steps.
    now = [0.0]
    monkeypatch.setattr(train_module, "monotonic", lambda: now[0])
    hp = {
        **HP,
        "batch_size": 1,
        "gradient_accumulation": 1,
        "total_epochs": 2,
        "checkpoint_every_steps": 4,
        "checkpoint_interval_seconds": 15,
        "keep_last_checkpoints": 2,
        "best_metric": "token_accuracy",
    }
    recorder = Recorder()
    hooks = recorder.hooks()
    record_progress = hooks.on_progress

    def on_progress(step: int, total: int, epoch: int, metrics: dict[str, float]) -> None:
        now[0] = 10.0 * step
        record_progress(step, total, epoch, metrics)

    hooks.on_progress = on_progress
    train_epochs(
        artifact_dir=train_artifact_dir,
        model_dir=tiny_model_dir,
        hyperparameters=Hyperparameters.model_validate(hp),
        start_epoch=0,
        end_epoch=2,
        resume_dir=None,
        out_dir=tmp_path,
        hooks=hooks,
    )
    rolling = [(s, k) for _, s, k in recorder.checkpoints if k not in ("best", "final")]
    # 5 steps per epoch. Any checkpoint restarts the interval; one reason is named per save.
    assert rolling == [(2, "time"), (4, "step"), (5, "epoch"), (7, "time"), (8, "step")]
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-7", "step-8"]
    assert [manifest(tmp_path / f"step-{s}")["kind"] for s in (7, 8)] == ["time", "step"]
    assert manifest(tmp_path / "final")["best"]["metric"] == "token_accuracy"


def test_best_travels_across_the_phase_boundary(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    import torch

    warmup = train(train_artifact_dir, tiny_model_dir, tmp_path / "w", 0, 2)
    assert warmup.best_step == 4 and warmup.best_checkpoint_dir == tmp_path / "w" / "best"
    assert manifest(warmup.checkpoint_dir)["best"]["value"] == warmup.best_value

    improving = Recorder()
    final = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "f",
        2,
        3,
        warmup.checkpoint_dir,
        recorder=improving,
    )
    assert warmup.best_value is not None and final.best_value is not None
    assert final.best_value < warmup.best_value and final.best_step == 6
    assert ("best", 6, "best") in improving.kinds()

    # A warmup best that the final phase cannot beat: no best checkpoint is written.
    state_file = warmup.checkpoint_dir / "training_state.pt"
    state = torch.load(state_file, weights_only=True)
    state["best"]["value"] = 0.0
    torch.save(state, state_file)
    beaten = Recorder()
    kept = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "k",
        2,
        3,
        warmup.checkpoint_dir,
        recorder=beaten,
    )
    assert (kept.best_value, kept.best_step, kept.best_checkpoint_dir) == (0.0, 4, None)
    assert [k for *_, k in beaten.kinds()] == ["final"]


def test_gradient_checkpointing_gives_the_same_numbers(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path, full_run: tuple[Any, Recorder]
) -> None:
    recorder = Recorder()
    result = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path,
        0,
        3,
        recorder=recorder,
        hp={**HP, "gradient_checkpointing": True},
    )
    assert result.gradient_checkpointing
    # Recomputation replays the forward's dropout masks, so nothing but memory changes.
    assert_same_losses(recorder.losses(), full_run[1].losses())
    assert_same_adapter(result.checkpoint_dir, full_run[0].checkpoint_dir)


@pytest.mark.parametrize(
    ("request_", "facts", "expected"),
    [
        ("auto", DeviceFacts(cuda=False, bf16=False, name="cpu"), "fp32"),
        ("auto", DeviceFacts(cuda=True, bf16=False, name="Tesla T4"), "fp16"),
        ("auto", DeviceFacts(cuda=True, bf16=True, name="A100"), "bf16"),
        ("fp16", DeviceFacts(cuda=True, bf16=True, name="A100"), "fp16"),
        ("fp32", DeviceFacts(cuda=True, bf16=True, name="A100"), "fp32"),
    ],
)
def test_precision_auto_picks_what_the_device_does(
    request_: str, facts: DeviceFacts, expected: str
) -> None:
    assert choose_precision(request_, facts) == expected


@pytest.mark.parametrize(
    ("request_", "facts", "message"),
    [
        ("bf16", DeviceFacts(cuda=True, bf16=False, name="Tesla T4"), "not supported by Tesla T4"),
        ("fp16", DeviceFacts(cuda=False, bf16=False, name="cpu"), "needs a CUDA GPU"),
    ],
)
def test_precision_the_device_cannot_do_is_refused(
    request_: str, facts: DeviceFacts, message: str
) -> None:
    with pytest.raises(PrecisionUnsupported, match=message) as excinfo:
        choose_precision(request_, facts)
    assert (excinfo.value.code, excinfo.value.param) == ("precision_unsupported", "precision")


def test_fp16_with_grad_scaler_checkpoints_and_resumes(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The T4 path (fp16 base, autocast, GradScaler) run on the CPU, where torch has fp16
    autocast and a CPU GradScaler."""
    import torch

    fp16 = Precision(name="fp16", device=torch.device("cpu"), dtype=torch.float16)
    monkeypatch.setattr(train_module, "resolve_precision", lambda request: fp16)
    ref = Recorder()
    whole = train(train_artifact_dir, tiny_model_dir, tmp_path / "a", 0, 2, recorder=ref)
    assert whole.precision == "fp16"
    assert all(v == v for v in ref.losses().values())  # no NaN: the scaler kept fp16 in range
    scaler = torch.load(whole.checkpoint_dir / "training_state.pt", weights_only=True)["scaler"]
    assert scaler is not None and scaler["scale"] > 0

    stopped = train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "b",
        0,
        2,
        recorder=Recorder(stop_after_steps=3),
    )
    assert stopped.stopped
    resumed = Recorder()
    train(
        train_artifact_dir,
        tiny_model_dir,
        tmp_path / "c",
        0,
        2,
        stopped.checkpoint_dir,
        recorder=resumed,
    )
    assert_same_losses(resumed.losses(), {s: v for s, v in ref.losses().items() if s > 3})
    assert_same_adapter(tmp_path / "c" / "final", whole.checkpoint_dir)


def test_result_counts_every_epoch_of_training_and_validation_work(
    train_artifact_dir: Path, full_run: tuple[Any, Recorder]
) -> None:
    import json

    artifact = json.loads((train_artifact_dir / "manifest.json").read_text())
    tokens = [r["tokens"] for r in artifact["token_counts"]["per_sample"]]  # in sample order
    epochs = HP["total_epochs"]
    result = full_run[0]
    assert result.samples == epochs * len(artifact["train"])
    assert result.tokens == epochs * sum(tokens[i] for i in artifact["train"])
    assert result.validation_samples == epochs * len(artifact["val"])


def test_on_ready_runs_once_after_the_model_load_and_before_the_first_step(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    calls: list[str] = []
    recorder = Recorder()
    hooks = recorder.hooks()
    hooks.on_ready = lambda: calls.append("ready")
    hooks.before_step = lambda step: calls.append(f"step {step}")
    train_epochs(
        artifact_dir=train_artifact_dir,
        model_dir=tiny_model_dir,
        hyperparameters=Hyperparameters.model_validate(
            {**HP, "total_epochs": 1, "warmup_epochs": 1}
        ),
        start_epoch=0,
        end_epoch=1,
        resume_dir=None,
        out_dir=tmp_path,
        hooks=hooks,
    )
    assert calls == ["ready", "step 0", "step 1"]
