"""Checkpoints that resume exactly, in another process or on another machine.

Layout of a checkpoint directory:
    adapter/             PEFT save_pretrained: adapter_config.json + adapter_model.safetensors
    training_state.pt    optimizer, scheduler, torch/CUDA/python/numpy RNG, global_step, epoch,
                         steps done in that epoch, total_steps
    manifest.json        format, kind, step, epoch, loss, val_loss, hyperparameters (written last)
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

from orchestrator.errors import RelaytuneError
from worker.recipe import CHECKPOINT_FORMAT

ADAPTER_DIR = "adapter"
STATE_FILE = "training_state.pt"
MANIFEST_FILE = "manifest.json"


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


def _rng_state() -> dict[str, Any]:
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


def _restore_rng(state: dict[str, Any]) -> None:
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
    ckpt_dir: Path,
    *,
    model: Any,
    optimizer: Any,
    scheduler: Any,
    position: Position,
    kind: str,
    loss: float | None,
    val_loss: float | None,
    hyperparameters: dict[str, Any],
) -> Path:
    import torch

    ckpt_dir = Path(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(ckpt_dir / ADAPTER_DIR, safe_serialization=True)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": _rng_state(),
        "position": asdict(position),
    }
    torch.save(state, ckpt_dir / STATE_FILE)
    manifest = {
        "format": CHECKPOINT_FORMAT,
        "kind": kind,
        "step": position.global_step,
        "epoch": position.epoch,
        "steps_in_epoch": position.steps_in_epoch,
        "total_steps": position.total_steps,
        "loss": loss,
        "val_loss": val_loss,
        "hyperparameters": hyperparameters,
        "files": [ADAPTER_DIR, STATE_FILE],
    }
    # Written last: a directory with a manifest holds a checkpoint that can load.
    (ckpt_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return ckpt_dir


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


def load_checkpoint(ckpt_dir: Path, *, model: Any, optimizer: Any, scheduler: Any) -> Position:
    """Restore adapter, optimizer, scheduler and RNG in place; return the saved position.

    Call it after the model and optimizer are built, since building them draws from the RNG.
    """
    import torch

    from worker.recipe.lora import load_adapter_weights

    ckpt_dir = Path(ckpt_dir)
    read_manifest(ckpt_dir)
    load_adapter_weights(model, ckpt_dir / ADAPTER_DIR)
    # weights_only: tensors, numbers, strings and tuples only, so no pickled code runs.
    state = torch.load(ckpt_dir / STATE_FILE, weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _restore_rng(state["rng"])
    return Position(**state["position"])
