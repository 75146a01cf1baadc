"""Bench of the bundled example: preprocess -> warmup -> final -> evaluate_and_export, in-process.

Runs the recipe functions the three phases run (no API, broker or object store) on
examples/circuit-boards with the tiny random Qwen3-VL, on the CPU, with the default
hyperparameters (total_epochs 8, warmup_epochs 5), and prints the evaluation as markdown:

    .venv/bin/python scripts/evaluate_example.py [--out-dir DIR] [--set NAME=VALUE ...]

A tiny random base learns little in 8 epochs: the numbers show what the pipeline measures, not
what Qwen3-VL-8B would reach.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# In-process on the CPU even where a GPU is visible: the bench is meant to be comparable.
os.environ["CUDA_VISIBLE_DEVICES"] = ""

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.hyperparameters import Hyperparameters  # noqa: E402
from worker.recipe.evaluate import evaluate_and_export  # noqa: E402
from worker.recipe.preprocess import build_artifact  # noqa: E402
from worker.recipe.train import TrainHooks, train_epochs  # noqa: E402
from worker.tiny_model import write_tiny_model  # noqa: E402

EXAMPLE = ROOT / "examples" / "circuit-boards"
COLUMNS = (
    ("exact_match", "exact match"),
    ("token_accuracy", "token accuracy"),
    ("rouge_l", "ROUGE-L"),
    ("val_loss", "val loss"),
)


def _train(
    artifact: Path,
    model_dir: str,
    hp: Hyperparameters,
    start: int,
    end: int,
    resume: Path | None,
    out: Path,
) -> Path:
    result = train_epochs(
        artifact_dir=artifact,
        model_dir=model_dir,
        hyperparameters=hp,
        start_epoch=start,
        end_epoch=end,
        resume_dir=resume,
        out_dir=out,
        hooks=TrainHooks(),
    )
    return Path(result.checkpoint_dir)


def _checkpoint_to_export(run_dirs: list[Path], last: Path) -> Path:
    """The newest checkpoint of kind "best" of the whole run (a best checkpoint is written only
    when the validation metric improves, so the newest is the best), else the last one."""
    best: list[tuple[int, Path]] = []
    for run_dir in run_dirs:
        for path in run_dir.rglob("manifest.json"):
            manifest = json.loads(path.read_text(encoding="utf-8"))
            if manifest.get("kind") == "best":
                best.append((int(manifest["step"]), path.parent))
    return max(best)[1] if best else last


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def markdown(report: dict[str, Any]) -> str:
    header = "| model | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [header, "|---" * (len(COLUMNS) + 1) + "|"]
    for side, label in (
        ("base", "base (tiny random)"),
        ("adapter", "base + LoRA adapter"),
        ("delta", "Δ"),
    ):
        cells = [_fmt(report[side][key], signed=side == "delta") for key, _ in COLUMNS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def samples_markdown(report: dict[str, Any]) -> str:
    lines = ["| file | reference | base answer | adapter answer |", "|---|---|---|---|"]
    for row in report["samples"]:
        cells = [
            row[k].replace("|", "\\|") or "(empty)"
            for k in ("file", "reference", "base_answer", "adapter_answer")
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(work: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    hp = Hyperparameters.model_validate(overrides)
    model_dir = str(write_tiny_model(work / "tiny-qwen3-vl", seed=0))
    artifact = work / "artifact"
    build_artifact(EXAMPLE, model_dir, artifact, hyperparameters=hp)
    # Two calls, as the relay runs them: warmup epochs, then the rest resumed from its checkpoint.
    warmup = _train(artifact, model_dir, hp, 0, hp.warmup_epochs, None, work / "warmup")
    final = _train(
        artifact, model_dir, hp, hp.warmup_epochs, hp.total_epochs, warmup, work / "final"
    )
    checkpoint = _checkpoint_to_export([work / "warmup", work / "final"], final)
    return evaluate_and_export(
        artifact_dir=artifact,
        model_dir=model_dir,
        checkpoint_dir=checkpoint,
        out_dir=work / "export",
        base_model_name="tiny-qwen3-vl",
        hyperparameters=hp,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, help="keep everything here (default: a temp dir)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a hyperparameter (JSON value), e.g. "
        "--set learning_rate=0.005; the defaults are the job defaults",
    )
    args = parser.parse_args()
    overrides = {}
    for item in args.overrides:
        name, _, value = item.partition("=")
        overrides[name] = json.loads(value)
    logging.basicConfig(level=logging.WARNING)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="relaytune-bench-") as tmp:
        work = args.out_dir or Path(tmp)
        report = run(work, overrides)
    elapsed = time.perf_counter() - started

    best = report["best_checkpoint"]
    print(markdown(report))
    print()
    print(samples_markdown(report))
    print()
    print(
        f"{report['num_samples']} held-out samples of {EXAMPLE.name}; exported checkpoint: "
        f"step {best['step']} (kind {best['kind']}, {best['metric']} {_fmt(best['value'])}); "
        f"adapter {report['adapter_export']['bytes'] / 1024:.0f} KiB; "
        f"{elapsed:.0f} s on CPU in total."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
