"""relaytune's training step against a plain Hugging Face `Trainer` + peft script.

Both sides train the tiny Qwen3-VL on the bundled example (examples/circuit-boards) in fp32 on
the CPU with the same LoRA config (relaytune's, from the same hyperparameters), the same batch
(batch_size x gradient_accumulation samples per optimizer step), learning-rate schedule,
gradient clipping, seed, image size bounds and torch thread count. Each measurement runs in its
own process (so its peak RSS is its own), relaytune and the baseline alternating.

    relaytune  the preprocess phase tokenizes once into an artifact (timed apart, as
               `preprocess_s`); each step collates the stored tensors and runs
               Trainer.optimizer_step (forward/backward per micro-batch, clip, AdamW)
    baseline   what a naive script does: a collator that opens the images and calls the
               processor (chat template, resize, patches) on every batch, `Trainer.train`

What differs besides the tokenization: relaytune trains on the answer tokens only, the baseline
on every text token (images and padding masked), the usual naive choice. Augmentation and the
validation split are off on both sides, so both see the same 12 samples.

Figures: optimizer steps after the first are timed (end of one step to the end of the next), and
samples/s is their samples over their time. Usage:
    python -m bench.train_step [--rounds 3] [--steps 6] [--threads 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import ROOT, ratio_summary, write_result

EXAMPLE = ROOT / "examples" / "circuit-boards"
SIDES = ("relaytune", "baseline")


def hyperparameters(steps: int) -> Any:
    from orchestrator.hyperparameters import Hyperparameters

    return Hyperparameters.model_validate(
        {
            "augmentation": {"enabled": False, "copies": 0},
            "validation_samples": 0,
            "total_epochs": steps,  # more than enough epochs: 12 samples make 2 steps
            "warmup_epochs": 1,
            "lora_dropout": 0.0,
        }
    )


# --- one side, in its own process --------------------------------------------------------------


def run_relaytune(model_dir: str, artifact: Path, steps: int) -> list[float]:
    from worker.recipe.data import epoch_windows
    from worker.recipe.train import Trainer, _seed_everything

    hp = hyperparameters(steps)
    trainer = Trainer(artifact, model_dir, hp)
    _seed_everything(hp.seed)
    trainer.model.train()
    effective = hp.batch_size * hp.gradient_accumulation
    windows = [
        w
        for epoch in range(hp.total_epochs)
        for w in epoch_windows(trainer.train_idx, effective, hp.seed, epoch)
    ]
    ends = [time.perf_counter()]
    sizes = []
    for window in windows[: steps + 1]:
        trainer.optimizer_step(window)
        ends.append(time.perf_counter())
        sizes.append(len(window))
    return _rates(ends[1:], sizes)


def _rates(ends: list[float], sizes: list[int]) -> list[float]:
    """Samples/s of each step after the first: its samples over the time since the last end."""
    return [size / (b - a) for a, b, size in zip(ends, ends[1:], sizes[1:], strict=False)]


def _records() -> list[dict[str, str]]:
    annotations = json.loads((EXAMPLE / "annotations.json").read_text())
    return [
        {
            "image": str(EXAMPLE / "images" / name),
            "question": row["question"],
            "answer": row["answer"],
        }
        for name, row in sorted(annotations.items())
    ]


def run_baseline(model_dir: str, steps: int) -> list[float]:
    import torch
    from peft import get_peft_model
    from PIL import Image
    from transformers import (
        AutoModelForImageTextToText,
        AutoProcessor,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from worker.recipe.lora import lora_config
    from worker.recipe.preprocess import image_size_bounds

    hp = hyperparameters(steps)
    processor = AutoProcessor.from_pretrained(model_dir)
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    bounds = image_size_bounds(processor.image_processor, hp.min_pixels, hp.max_pixels)
    size = {"shortest_edge": bounds["min_pixels"], "longest_edge": bounds["max_pixels"]}
    image_token_id = tokenizer.convert_tokens_to_ids(processor.image_token)
    ends: list[float] = []
    sizes: list[int] = []
    collated = [0]  # samples collated since the last step ended: the window the step trained

    def collate(rows: list[dict[str, str]]) -> dict[str, Any]:
        texts, images = [], []
        for row in rows:
            messages = [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": row["question"]}],
                },
                {"role": "assistant", "content": row["answer"]},
            ]
            texts.append(processor.apply_chat_template(messages, tokenize=False))
            with Image.open(row["image"]) as opened:
                images.append(opened.convert("RGB"))
        batch = processor(text=texts, images=images, size=size, padding=True, return_tensors="pt")
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        labels[batch["input_ids"] == image_token_id] = -100
        batch["labels"] = labels
        collated[0] += len(rows)
        return dict(batch)

    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(hp.seed)
    model = get_peft_model(model, lora_config(hp, model))

    class StepClock(TrainerCallback):
        def on_step_end(self, *_: Any, **__: Any) -> None:
            ends.append(time.perf_counter())
            sizes.append(collated[0])
            collated[0] = 0

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="relaytune-bench-hf-"),
        per_device_train_batch_size=hp.batch_size,
        gradient_accumulation_steps=hp.gradient_accumulation,
        learning_rate=hp.learning_rate,
        weight_decay=0.0,
        warmup_steps=hp.lr_warmup_ratio,  # below 1: a share of the steps
        lr_scheduler_type="cosine",
        max_grad_norm=hp.max_grad_norm,
        max_steps=steps + 1,
        seed=hp.seed,
        use_cpu=True,
        save_strategy="no",
        report_to=[],
        logging_strategy="no",
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_records(),
        data_collator=collate,
        callbacks=[StepClock()],
    )
    trainer.train()
    return _rates(ends, sizes)


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.side == "relaytune":
        rates = run_relaytune(args.model_dir, Path(args.artifact), args.steps)
    else:
        rates = run_baseline(args.model_dir, args.steps)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"side": args.side, "rates": rates, "peak_rss_mib": peak_kib / 1024}))


# --- the driver: prepare once, alternate the sides ----------------------------------------------


def prepare(work: Path, steps: int) -> tuple[str, Path, float]:
    from worker.recipe.preprocess import build_artifact
    from worker.tiny_model import write_tiny_model

    model_dir = str(write_tiny_model(work / "tiny-qwen3-vl"))
    started = time.perf_counter()
    build_artifact(EXAMPLE, model_dir, work / "artifact", hyperparameters=hyperparameters(steps))
    return model_dir, work / "artifact", time.perf_counter() - started


def measure_side(
    side: str, model_dir: str, artifact: Path, steps: int, threads: int
) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.train_step", "--child", side, "--model-dir", model_dir]
    command += ["--artifact", str(artifact), "--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{side} run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    rates = result["rates"]
    # Samples over time of all timed steps, so short and long steps weigh by their time.
    result["samples_per_s"] = len(rates) / sum(1 / r for r in rates) if rates else None
    return result


def run(quick: bool = False, rounds: int = 3, steps: int = 6, threads: int = 2) -> dict[str, Any]:
    import torch

    if quick:
        rounds, steps = 1, 2
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="relaytune-bench-train-") as tmp:
        model_dir, artifact, preprocess_s = prepare(Path(tmp), steps)
        for round_ in range(rounds):
            for side in SIDES if round_ % 2 == 0 else reversed(SIDES):
                result = measure_side(side, model_dir, artifact, steps, threads)
                runs.append({"round": round_, **result})
                print(
                    f"  train_step {side:9} round {round_}: "
                    f"{result['samples_per_s']:.2f} samples/s, "
                    f"peak RSS {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
    figures = {side: [r for r in runs if r["side"] == side] for side in SIDES}
    return {
        "what": "training samples/s and peak RSS, relaytune's step vs a plain HF Trainer + peft",
        "settings": {
            "rounds": rounds,
            "timed_steps": steps,
            "torch_threads": threads,
            "precision": "fp32",
            "device": "cpu",
            "torch": torch.__version__,
        },
        "preprocess_s": preprocess_s,
        "runs": runs,
        "summary": ratio_summary(
            {side: [r["samples_per_s"] for r in rs] for side, rs in figures.items()},
            "relaytune",
            "baseline",
        )
        | {
            "peak_rss_mib": {
                side: max(r["peak_rss_mib"] for r in rs) for side, rs in figures.items()
            }
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--child", dest="side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--artifact", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        child(args)
        return
    result = run(args.quick, args.rounds, args.steps, args.threads)
    write_result("train-step", result, args.out)


if __name__ == "__main__":
    main()
