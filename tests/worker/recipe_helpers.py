"""Shared by the training tests: small hyperparameters, a hook recorder, adapter comparison."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.hyperparameters import Hyperparameters
from worker.recipe.train import TrainHooks, TrainResult, train_epochs

HP: dict[str, Any] = {
    "lora_rank": 8,
    "lora_alpha": 32,
    "lora_dropout": 0.1,  # non-zero so that resuming must restore the RNG exactly
    "target_modules": ["q_proj", "v_proj"],
    "batch_size": 2,  # 5 train samples, 4 per optimizer step: windows of 4 and 1
    "gradient_accumulation": 2,
    "learning_rate": 5e-3,
    "warmup_epochs": 2,
    "total_epochs": 3,
    "seed": 42,
}
STEPS_PER_EPOCH = 2
TOLERANCE = 1e-5


class Killed(Exception):
    """Stands in for a worker that died: raised by before_step, it ends the call at once."""


@dataclass
class Recorder:
    progress: list[tuple[int, int, int, dict[str, float]]] = field(default_factory=list)
    checkpoints: list[tuple[Path, int, str]] = field(default_factory=list)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    stop_after_steps: int | None = None
    kill_before_step: int | None = None

    def before_step(self, step: int) -> None:
        if step == self.kill_before_step:
            raise Killed(f"killed before step {step}")

    def hooks(self) -> TrainHooks:
        return TrainHooks(
            on_progress=lambda s, t, e, m: self.progress.append((s, t, e, m)),
            should_stop=lambda: (
                self.stop_after_steps is not None and len(self.progress) >= self.stop_after_steps
            ),
            on_checkpoint=lambda d, s, k: self.checkpoints.append((d, s, k)),
            on_event=lambda t, d: self.events.append((t, d)),
            before_step=self.before_step,
        )

    def losses(self) -> dict[int, float]:
        """Loss of each optimizer step (the last report wins after an OOM rollback)."""
        return {step: m["loss"] for step, _, _, m in self.progress}

    def kinds(self) -> list[tuple[str, int, str]]:
        return [(d.name, s, k) for d, s, k in self.checkpoints]


def train(
    artifact_dir: Path,
    model_dir: str,
    out_dir: Path,
    start: int,
    end: int,
    resume_dir: Path | None = None,
    recorder: Recorder | None = None,
    hp: dict[str, Any] | None = None,
) -> TrainResult:
    return train_epochs(
        artifact_dir=artifact_dir,
        model_dir=model_dir,
        hyperparameters=Hyperparameters.model_validate(hp or HP),
        start_epoch=start,
        end_epoch=end,
        resume_dir=resume_dir,
        out_dir=out_dir,
        hooks=(recorder or Recorder()).hooks(),
    )


def adapter(ckpt_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(ckpt_dir / "adapter" / "adapter_model.safetensors"))


def manifest(ckpt_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((ckpt_dir / "manifest.json").read_text())
    return result


def assert_same_adapter(a: Path, b: Path, atol: float = TOLERANCE) -> None:
    import torch

    left, right = adapter(a), adapter(b)
    assert left.keys() == right.keys()
    for key in left:
        torch.testing.assert_close(left[key], right[key], atol=atol, rtol=0, msg=key)


def assert_same_losses(got: dict[int, float], want: dict[int, float]) -> None:
    assert sorted(got) == sorted(want)
    for step in want:
        assert abs(got[step] - want[step]) <= TOLERANCE, (step, got[step], want[step])


RESUME_SCRIPT = """
import json, sys
from pathlib import Path
from orchestrator.hyperparameters import Hyperparameters
from worker.recipe.train import TrainHooks, train_epochs
args = json.loads(sys.argv[1])
losses = []
result = train_epochs(
    artifact_dir=Path(args["artifact"]), model_dir=args["model"],
    hyperparameters=Hyperparameters.model_validate(args["hp"]),
    start_epoch=args["start"], end_epoch=args["end"], resume_dir=Path(args["resume"]),
    out_dir=Path(args["out"]),
    hooks=TrainHooks(on_progress=lambda s, t, e, m: losses.append([s, t, m["loss"], m["lr"]])),
)
print(json.dumps({"step": result.global_step, "dir": str(result.checkpoint_dir),
                  "losses": losses}))
"""


def train_in_subprocess(
    artifact_dir: Path,
    model_dir: str,
    resume_dir: Path,
    out_dir: Path,
    start: int,
    end: int,
    hp: dict[str, Any],
) -> dict[str, Any]:
    """Resume in a fresh interpreter: nothing but the checkpoint directory carries over."""
    args = {
        "artifact": str(artifact_dir),
        "model": model_dir,
        "hp": hp,
        "resume": str(resume_dir),
        "out": str(out_dir),
        "start": start,
        "end": end,
    }
    proc = subprocess.run(
        [sys.executable, "-c", RESUME_SCRIPT, json.dumps(args)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result
