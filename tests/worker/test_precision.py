"""Training and evaluation load the base model in the same device and dtype, chosen in one
place, for every device capability (the capabilities are stand-ins: no GPU is needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from worker.recipe import CHECKPOINT_FORMAT, precision
from worker.recipe import evaluate as evaluate_module
from worker.recipe import train as train_module
from worker.recipe.evaluate import evaluate_and_export
from worker.recipe.precision import DeviceFacts
from worker.recipe.train import TrainHooks, train_epochs

CPU = DeviceFacts(cuda=False, bf16=False, name="cpu")
T4 = DeviceFacts(cuda=True, bf16=False, name="Tesla T4")
A100 = DeviceFacts(cuda=True, bf16=True, name="NVIDIA A100")


class Loaded(Exception):
    """Raised by the stand-in loader once it has seen where and how the base would load."""


@pytest.mark.parametrize(
    ("facts", "request_", "expected"),
    [
        (CPU, "auto", ("cpu", "float32")),
        (T4, "auto", ("cuda", "float16")),
        (A100, "auto", ("cuda", "bfloat16")),
        (A100, "fp32", ("cuda", "float32")),
    ],
    ids=["cpu", "t4", "a100", "a100-fp32-requested"],
)
def test_evaluation_loads_the_base_as_training_does(
    train_artifact_dir: Path,
    tiny_model_dir: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    facts: DeviceFacts,
    request_: str,
    expected: tuple[str, str],
) -> None:
    loads: list[tuple[str, str]] = []

    def load_base(model_dir: str, device: Any, dtype: Any) -> Any:
        loads.append((device.type, str(dtype).removeprefix("torch.")))
        raise Loaded

    monkeypatch.setattr(precision, "device_facts", lambda: facts)
    monkeypatch.setattr(train_module, "load_base", load_base)
    monkeypatch.setattr(evaluate_module, "load_base", load_base)
    hp = Hyperparameters.model_validate({"precision": request_})

    with pytest.raises(Loaded):
        train_epochs(
            artifact_dir=train_artifact_dir,
            model_dir=tiny_model_dir,
            hyperparameters=hp,
            start_epoch=0,
            end_epoch=1,
            resume_dir=None,
            out_dir=tmp_path / "train",
            hooks=TrainHooks(),
        )
    # A checkpoint to evaluate, which records the job's hyperparameters.
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "manifest.json").write_text(
        json.dumps(
            {"format": CHECKPOINT_FORMAT, "kind": "final", "hyperparameters": hp.model_dump()}
        )
    )
    with pytest.raises(Loaded):
        evaluate_and_export(
            artifact_dir=train_artifact_dir,
            model_dir=tiny_model_dir,
            checkpoint_dir=checkpoint,
            out_dir=tmp_path / "export",
        )

    assert loads == [expected, expected]
