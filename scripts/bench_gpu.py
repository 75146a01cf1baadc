"""LoRA training throughput of Qwen3-VL-shaped models with random weights.

Builds a Qwen3-VL model from the published config.json shapes (2B, 8B) or a tiny preset with
random initialisation directly on the device, wraps it with a LoRA adapter (peft) and times
optimizer steps on synthetic batches shaped like relaytune's use case: one 448x448 image and
about 64 text tokens per sample. Reports samples/s, tokens/s, step time, peak memory and MFU.

The command line of the `bench` package next to it (transformers, peft and torch only, plus
worker/tiny_model.py's shapes): it runs on a bare GPU machine from an uninstalled copy of the
repository. See bench/README.md for how to run it, the FLOP model and the recorded results.

    python scripts/bench_gpu.py --preset 2b 8b --micro-batch 2 8 --out results.json
    python scripts/bench_gpu.py --preset tiny --device cpu --dtype float32 --steps 2  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from pathlib import Path
from typing import Any

import torch

# Runs from a checkout that need not be installed (the GPU machine gets a bare copy).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.batches import BatchShape, batch_shape, make_batch
from bench.flops import PEAK_BF16_TFLOPS, count_linear_params, flop_model, peak_tflops_for
from bench.model import apply_lora, build_config, build_model, set_grad_ckpt
from bench.report import environment, results_name, summary_line, table, write
from bench.shapes import LORA_TARGETS, PRESETS, QWEN_IDS
from bench.timing import RunSpec, measure_matmul_tflops, run_one, sync, train_step

# What this script re-exports from the bench package (tests load the script by path).
__all__ = [
    "LORA_TARGETS",
    "PEAK_BF16_TFLOPS",
    "PRESETS",
    "QWEN_IDS",
    "BatchShape",
    "RunSpec",
    "apply_lora",
    "batch_shape",
    "build_config",
    "build_model",
    "count_linear_params",
    "environment",
    "flop_model",
    "main",
    "make_batch",
    "measure_matmul_tflops",
    "parse_args",
    "peak_tflops_for",
    "results_name",
    "run_one",
    "set_grad_ckpt",
    "summary_line",
    "sync",
    "table",
    "train_step",
    "write",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", nargs="+", choices=sorted(PRESETS), default=["tiny"])
    p.add_argument("--micro-batch", nargs="+", type=int, default=[2, 8])
    p.add_argument("--lora", nargs="+", choices=sorted(LORA_TARGETS), default=["qv"])
    p.add_argument(
        "--grad-ckpt",
        nargs="+",
        choices=["off", "on"],
        default=["off"],
        help="gradient checkpointing settings to time",
    )
    p.add_argument("--steps", type=int, default=10, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--image-size", type=int, default=448, help="square image side, pixels")
    p.add_argument("--text-tokens", type=int, default=64, help="text tokens per sample")
    p.add_argument("--lora-dropout", type=float, default=0.1)
    p.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--attn", default="sdpa", help="attn_implementation for transformers")
    p.add_argument("--peak-tflops", type=float, default=None, help="override the card's peak")
    p.add_argument(
        "--no-count-flops",
        dest="count_flops",
        action="store_false",
        help="skip the FlopCounterMode cross-check step",
    )
    p.add_argument("--no-matmul", dest="matmul", action="store_false", help="skip the matmul probe")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON results file, or an existing folder to write <device-name>-<date>.json in",
    )
    args = p.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or min(args.micro_batch) < 1:
        p.error("--steps >= 1, --warmup >= 0 and --micro-batch >= 1 are required")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    env = environment(device)
    peak = args.peak_tflops
    if peak is None and device.type == "cuda" and dtype == torch.bfloat16:
        peak = peak_tflops_for(env["device_name"])
    matmul = measure_matmul_tflops(device, dtype) if args.matmul else None
    out = args.out
    if out is not None and out.is_dir():
        out = out / results_name(env["device_name"], env["date"])
    result: dict[str, Any] = {
        "environment": env,
        "peak_bf16_tflops": peak,
        "peak_source": "--peak-tflops"
        if args.peak_tflops is not None
        else "vendor datasheet, dense bf16, by device name",
        "measured_matmul_tflops": matmul,
        "settings": {
            "dtype": args.dtype,
            "attn_implementation": args.attn,
            "image_size": args.image_size,
            "text_tokens": args.text_tokens,
            "lora_r": 8,
            "lora_alpha": 32,
            "lora_dropout": args.lora_dropout,
            "optimizer": "AdamW (fused on CUDA), LoRA parameters only",
        },
        "configs": {
            name: {"source": PRESETS[name]["source"], **build_config(name, args.attn).to_dict()}
            for name in args.preset
        },
        "runs": [],
    }
    for preset in args.preset:
        t0 = time.perf_counter()
        model = build_model(preset, device, dtype, args.attn)
        cfg = model.config
        sync(device)
        print(f"[{preset}] built in {time.perf_counter() - t0:.1f}s", flush=True)
        for lora in args.lora:
            peft_model = apply_lora(model, lora, args.lora_dropout)
            for ckpt in args.grad_ckpt:
                for mb in args.micro_batch:
                    spec = RunSpec(preset, mb, lora, ckpt == "on")
                    try:
                        run = run_one(spec, peft_model, cfg, device, dtype, args, peak, matmul)
                    except torch.cuda.OutOfMemoryError as exc:
                        run = {**spec.__dict__, "error": f"OOM: {str(exc)[:300]}"}
                    except Exception as exc:  # record and go on with the next configuration
                        run = {**spec.__dict__, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
                    result["runs"].append(run)
                    write(out, result)
                    print(summary_line(env["device_name"], run), flush=True)
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            set_grad_ckpt(peft_model, False)
            model = peft_model.unload()
            del peft_model
        del model
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    write(out, result)
    print(table(result))
    if out is not None:
        print(f"results: {out}")
    return result


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
