"""Checkpoints that resume exactly, in another process or on another machine.

Layout of a checkpoint directory:
    adapter/             PEFT save_pretrained: adapter_config.json + adapter_model.safetensors
    training_state.pt    optimizer, scheduler, GradScaler (fp16 only, else None),
                         torch/CUDA/python/numpy RNG, position (global_step, epoch, steps done
                         in that epoch, total_steps), best validation value so far
    manifest.json        format, kind, position, metrics, best, memory plan, precision,
                         hyperparameters (written last)

Kinds (orchestrator.layout.CheckpointKind): "step", "time" and "epoch" are the rolling
checkpoints (keep the last k), "stop" is written on a stop request, "best" whenever the
validation metric improves, "final" at the end of a train_epochs call.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import RelaytuneError
from orchestrator.layout import ADAPTER_DIR, MANIFEST_FILE
from worker.recipe import CHECKPOINT_FORMAT

STATE_FILE = "training_state.pt"


class CheckpointMismatch(RelaytuneError):
    """A checkpoint that cannot continue this run (other format, schedule or epoch)."""

    status_code = 409
    code = "checkpoint_mismatch"


@dataclass
class Position:
    """Where training stands: the next optimizer step to run is `steps_in_epoch` of `epoch`."""

    global_step: int
    epoch: int
    steps_in_epoch: int
    total_steps: int


@dataclass
class Best:
    """The best validation value seen so far in the whole job (it travels in checkpoints)."""

    metric: str  # "val_loss" (lower is better) or "token_accuracy" (higher is better)
    value: float | None = None
    step: int | None = None

    def improved_by(self, value: float) -> bool:
        if self.value is None:
            return True
        return value < self.value if self.metric == "val_loss" else value > self.value

    @classmethod
    def restored(cls, saved: dict[str, Any] | None, metric: str) -> Best:
        """The best a checkpoint carried; none yet if it was chosen by another metric."""
        saved = saved or {}
        if saved.get("metric") != metric:
            return cls(metric)
        return cls(metric, saved.get("value"), saved.get("step"))


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    name, keys, pos, has_gauss, cached = cast(
        tuple[str, "np.ndarray[Any, Any]", int, int, float], np.random.get_state(legacy=True)
    )
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        # As plain values so that torch.load(weights_only=True) accepts them.
        "numpy": {
            "name": name,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
    }


def restore_rng(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["name"],
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )


def save_checkpoint(
    ckpt_dir: Path, model: Any, state: dict[str, Any], manifest: dict[str, Any]
) -> Path:
    """Write the adapter, the training state (everything else an exact resume needs: optimizer,
    schedule, scaler, RNG, position, best) and, last, the manifest that describes them."""
    import torch

    ckpt_dir = Path(ckpt_dir)
    if ckpt_dir.exists():  # a best checkpoint replaces the previous one in place
        shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True)
    model.save_pretrained(ckpt_dir / ADAPTER_DIR, safe_serialization=True)
    torch.save(state, ckpt_dir / STATE_FILE)
    manifest = {"format": CHECKPOINT_FORMAT, **manifest, "files": [ADAPTER_DIR, STATE_FILE]}
    # Written last: a directory with a manifest holds a checkpoint that can load.
    (ckpt_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return ckpt_dir


def prune_rolling(written: list[Path], keep: int) -> list[Path]:
    """Delete all but the newest `keep` of the rolling checkpoint dirs; return those kept."""
    for old in written[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return written[-keep:]


def read_manifest(ckpt_dir: Path) -> dict[str, Any]:
    path = Path(ckpt_dir) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointMismatch(f"no {MANIFEST_FILE} in {ckpt_dir}", param=str(ckpt_dir))
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointMismatch(
            f"checkpoint format {manifest.get('format')!r} is not {CHECKPOINT_FORMAT!r}",
            param=str(path),
        )
    return manifest


def load_checkpoint(ckpt_dir: Path, model: Any) -> dict[str, Any]:
    """Load the adapter weights into `model` in place; return the saved training state."""
    import torch

    from worker.recipe.lora import load_adapter_weights

    ckpt_dir = Path(ckpt_dir)
    read_manifest(ckpt_dir)
    load_adapter_weights(model, ckpt_dir / ADAPTER_DIR)
    # weights_only: tensors, numbers, strings and tuples only, so no pickled code runs.
    state: dict[str, Any] = torch.load(ckpt_dir / STATE_FILE, weights_only=True)
    return state


def _to_cpu(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def snapshot(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint in host memory (trainable weights + training state), to roll back to when
    an optimizer step fails half-way. For LoRA it is small."""
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return cast(dict[str, Any], _to_cpu({"trainable": trainable, **state}))


def restore_snapshot(model: Any, saved: dict[str, Any]) -> dict[str, Any]:
    """Copy the snapshot's trainable weights back into `model`; return its training state."""
    import torch

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["trainable"].items():
            params[name].copy_(value)
    return saved
