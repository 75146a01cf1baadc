"""The measured loop: warm-up and timed optimizer steps of one configuration, the matmul probe."""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import torch

from .batches import batch_shape, make_batch
from .flops import count_linear_params, flop_model
from .model import set_grad_ckpt


@dataclass(frozen=True)
class RunSpec:
    preset: str
    micro_batch: int
    lora: str
    grad_ckpt: bool


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op off CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float | None:
    """The card's bf16 matrix-product rate on random data, to read MFU against."""
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    elapsed = time.perf_counter() - start
    del a, b
    return 2.0 * n**3 * reps / elapsed / 1e12


def train_step(
    model: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]
) -> float:
    out = model(**batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(out.loss.detach())


def count_flops_one_step(
    model: Any, optimizer: torch.optim.Optimizer, batch: dict[str, torch.Tensor]
) -> float | None:
    """Cross-check of the analytic model: torch's FlopCounterMode over one step."""
    try:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            train_step(model, optimizer, batch)
        return float(counter.get_total_flops())
    except Exception as exc:  # a counter failure must not lose the timing
        print(f"  flop counter failed: {exc!r}", file=sys.stderr)
        return None


def run_one(
    spec: RunSpec,
    model: Any,
    cfg: Any,
    device: torch.device,
    dtype: torch.dtype,
    args: argparse.Namespace,
    peak_tflops: float | None,
    matmul_tflops: float | None,
) -> dict[str, Any]:
    shape = batch_shape(cfg, spec.micro_batch, args.image_size, args.text_tokens)
    set_grad_ckpt(model, spec.grad_ckpt)
    model.train()
    params = count_linear_params(model)
    flops = flop_model(cfg, params, shape, spec.grad_ckpt)
    batch = make_batch(cfg, shape, args.image_size, device, dtype)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=device.type == "cuda")

    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    losses = [train_step(model, optimizer, batch) for _ in range(args.warmup)]
    times: list[float] = []
    for _ in range(args.steps):
        sync(device)
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, batch))  # float() waits for the step
        sync(device)
        times.append(time.perf_counter() - start)
    peak_alloc = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    peak_reserved = torch.cuda.max_memory_reserved(device) if device.type == "cuda" else None
    counted = count_flops_one_step(model, optimizer, batch) if args.count_flops else None

    mean_t = statistics.fmean(times)
    median_t = statistics.median(times)
    achieved = flops["model_flops_per_step"] / median_t
    gib = 1024.0**3
    del optimizer, batch
    return {
        "preset": spec.preset,
        "micro_batch": spec.micro_batch,
        "lora_targets": spec.lora,
        "gradient_checkpointing": spec.grad_ckpt,
        "seq_len": shape.seq_len,
        "image_tokens_per_sample": shape.image_tokens,
        "vision_patches_per_sample": shape.patches,
        "label_tokens_per_sample": shape.label_tokens,
        "tokens_per_step": shape.micro_batch * shape.seq_len,
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "step_time_s_median": median_t,
        "step_time_s_mean": mean_t,
        "step_time_s_min": min(times),
        "step_time_s_max": max(times),
        "samples_per_s": spec.micro_batch / median_t,
        "tokens_per_s": shape.micro_batch * shape.seq_len / median_t,
        "peak_memory_gib": None if peak_alloc is None else peak_alloc / gib,
        "peak_reserved_gib": None if peak_reserved is None else peak_reserved / gib,
        "params": params,
        "flops": flops,
        "counted_flops_per_step": counted,
        "achieved_tflops": achieved / 1e12,
        "mfu": None if peak_tflops is None else achieved / (peak_tflops * 1e12),
        "hfu": None
        if peak_tflops is None
        else flops["hardware_flops_per_step"] / median_t / (peak_tflops * 1e12),
        "mfu_vs_measured_matmul": (
            None if matmul_tflops is None else achieved / (matmul_tflops * 1e12)
        ),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "losses_finite": all(math.isfinite(x) for x in losses),
    }
