"""GPU check of the training recipe: bf16 and fp16 (grad scaler) training, exact resume across
a process-free split, gradient checkpointing and modules_to_save, on the tiny Qwen3-VL and the
bundled example. Writes a JSON summary; exits non-zero on a failed check.

    python scripts/gpu_smoke.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Runs from a checkout that need not be installed (the GPU machine gets a bare copy).
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.hyperparameters import Hyperparameters  # noqa: E402
from worker.recipe.preprocess import build_artifact  # noqa: E402
from worker.recipe.train import TrainHooks, train_epochs  # noqa: E402
from worker.tiny_model import write_tiny_model  # noqa: E402

EXAMPLE = ROOT / "examples" / "circuit-boards"


def _adapter(ckpt: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return dict(load_file(str(ckpt / "adapter" / "adapter_model.safetensors")))


def _max_diff(a: dict[str, Any], b: dict[str, Any]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _train(
    work: Path,
    name: str,
    hp: Hyperparameters,
    start: int,
    end: int,
    resume: Path | None,
    losses: list[float],
) -> Any:
    def on_progress(step: int, total: int, epoch: int, metrics: dict[str, float]) -> None:
        losses.append(float(metrics["loss"]))

    return train_epochs(
        artifact_dir=work / "artifact",
        model_dir=str(work / "model"),
        hyperparameters=hp,
        start_epoch=start,
        end_epoch=end,
        resume_dir=resume,
        out_dir=work / name,
        hooks=TrainHooks(on_progress=on_progress),
    )


def check(work: Path, precision: str, **extra: Any) -> dict[str, Any]:
    hp = Hyperparameters(
        total_epochs=3,
        warmup_epochs=2,
        precision=precision,  # type: ignore[arg-type]
        learning_rate=5e-3,
        lora_dropout=0.0,
        **extra,
    )
    tag = f"{precision}-{'-'.join(extra) or 'plain'}"
    started = time.perf_counter()
    whole: list[float] = []
    full = _train(work, f"{tag}-full", hp, 0, 3, None, whole)
    split: list[float] = []
    warm = _train(work, f"{tag}-warm", hp, 0, 2, None, split)
    final = _train(work, f"{tag}-final", hp, 2, 3, Path(warm.checkpoint_dir), split)
    diff = _max_diff(_adapter(Path(full.checkpoint_dir)), _adapter(Path(final.checkpoint_dir)))
    loss_diff = max(abs(a - b) for a, b in zip(whole, split, strict=True))
    return {
        "check": tag,
        "precision": full.precision,
        "steps": full.global_step,
        "first_loss": whole[0],
        "last_loss": whole[-1],
        "losses_finite": all(math.isfinite(x) for x in whole),
        "loss_decreased": whole[-1] < whole[0],
        "resume_max_adapter_diff": diff,
        "resume_max_loss_diff": loss_diff,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "checks": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_tiny_model(work / "model", seed=0)
        build_artifact(
            EXAMPLE,
            str(work / "model"),
            work / "artifact",
            hyperparameters=Hyperparameters.model_validate({"augmentation": {"enabled": False}}),
        )
        cases: list[tuple[str, dict[str, Any]]] = [
            ("bf16", {}),
            ("fp16", {}),
            ("bf16", {"gradient_checkpointing": True}),
            ("bf16", {"modules_to_save": ["lm_head"]}),
        ]
        for precision, extra in cases:
            try:
                results["checks"].append(check(work, precision, **extra))
            except Exception as exc:  # record and go on: one failed check must not hide others
                results["checks"].append({"check": f"{precision}-{extra}", "error": repr(exc)})
            args.out.write_text(json.dumps(results, indent=2))
    ok = all("error" not in c and c["losses_finite"] for c in results["checks"])
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
