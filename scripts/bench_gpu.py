"""LoRA training throughput of Qwen3-VL-shaped models with random weights.

Builds a Qwen3-VL model from the published config.json shapes (2B, 8B) or a tiny preset with
random initialisation directly on the device, wraps it with a LoRA adapter (peft) and times
optimizer steps on synthetic batches shaped like relaytune's use case: one 448x448 image and
about 64 text tokens per sample. Reports samples/s, tokens/s, step time, peak memory and MFU.

Self-contained on purpose (transformers, peft and torch only): it must run on a bare GPU
machine from a copy of this one file. See bench/README.md for how to run it, the FLOP model and
the recorded results.

    python scripts/bench_gpu.py --preset 2b 8b --micro-batch 2 8 --out results.json
    python scripts/bench_gpu.py --preset tiny --device cpu --dtype float32 --steps 2  # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import gc
import json
import math
import platform
import re
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

# Runs from a checkout that need not be installed (the GPU machine gets a bare copy).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worker.tiny_model import TEXT_SHAPES, VISION_SHAPES

# Token ids of the published Qwen3-VL checkpoints (vocab 151936).
QWEN_IDS = {
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "image_token_id": 151655,
    "video_token_id": 151656,
}

# Qwen3-VL-2B-Instruct and Qwen3-VL-8B-Instruct config.json (text_config / vision_config), as
# published on the Hugging Face Hub. Only the fields that decide shapes and cost are repeated.
PRESETS: dict[str, dict[str, Any]] = {
    "2b": {
        "source": "Qwen/Qwen3-VL-2B-Instruct config.json",
        "text": {
            "vocab_size": 151936,
            "hidden_size": 2048,
            "intermediate_size": 6144,
            "num_hidden_layers": 28,
            "num_attention_heads": 16,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 24,
            "hidden_size": 1024,
            "intermediate_size": 4096,
            "num_heads": 16,
            "out_hidden_size": 2048,
            "deepstack_visual_indexes": [5, 11, 17],
            "num_position_embeddings": 2304,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "tie_word_embeddings": True,
        "ids": QWEN_IDS,
    },
    "8b": {
        "source": "Qwen/Qwen3-VL-8B-Instruct config.json",
        "text": {
            "vocab_size": 151936,
            "hidden_size": 4096,
            "intermediate_size": 12288,
            "num_hidden_layers": 36,
            "num_attention_heads": 32,
            "num_key_value_heads": 8,
            "head_dim": 128,
            "max_position_embeddings": 262144,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5000000.0,
                "mrope_section": [24, 20, 20],
                "mrope_interleaved": True,
            },
        },
        "vision": {
            "depth": 27,
            "hidden_size": 1152,
            "intermediate_size": 4304,
            "num_heads": 16,
            "out_hidden_size": 4096,
            "deepstack_visual_indexes": [8, 16, 24],
            "num_position_embeddings": 2304,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "tie_word_embeddings": False,
        "ids": QWEN_IDS,
    },
    # Same architecture, tiny shapes: the CPU smoke test runs the same code path in seconds.
    "tiny": {
        "source": "tiny shapes of the same architecture (worker/tiny_model.py's)",
        "text": {**TEXT_SHAPES, "vocab_size": 512},
        "vision": VISION_SHAPES,
        "tie_word_embeddings": False,
        "ids": {
            "vision_start_token_id": 500,
            "vision_end_token_id": 501,
            "image_token_id": 502,
            "video_token_id": 503,
        },
    },
}

# LoRA targets, matched against the full module path: language model only, never the vision
# tower (whose MLP is also named *_proj).
LORA_TARGETS = {
    "qv": r"^(?:.*\.)?language_model\.(?:.*\.)?(?:q_proj|v_proj)$",
    "all-linear": (
        r"^(?:.*\.)?language_model\.(?:.*\.)?"
        r"(?:q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$"
    ),
}

# Dense bf16 tensor-core peak (no sparsity) from the vendors' datasheets, by device name.
PEAK_BF16_TFLOPS = (
    ("H200", 989.4),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.4),  # SXM / "H100 80GB HBM3"
    ("GH200", 989.4),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("A10G", 125.0),
    ("L4", 121.0),
)


@dataclass(frozen=True)
class RunSpec:
    preset: str
    micro_batch: int
    lora: str
    grad_ckpt: bool


def peak_tflops_for(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def build_config(preset: str, attn_implementation: str) -> Any:
    from transformers import Qwen3VLConfig

    spec = PRESETS[preset]
    cfg = Qwen3VLConfig(
        text_config=dict(spec["text"]),
        vision_config=dict(spec["vision"]),
        tie_word_embeddings=spec["tie_word_embeddings"],
        **spec["ids"],
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def build_model(preset: str, device: torch.device, dtype: torch.dtype, attn: str) -> Any:
    from transformers import AutoModelForImageTextToText

    cfg = build_config(preset, attn)
    torch.manual_seed(0)
    with device:
        model = AutoModelForImageTextToText.from_config(cfg, dtype=dtype, attn_implementation=attn)
    model.config.use_cache = False
    model.config.text_config.use_cache = False
    model.requires_grad_(False)
    return model


@dataclass(frozen=True)
class BatchShape:
    micro_batch: int
    seq_len: int  # LLM tokens per sample, image tokens included
    image_tokens: int  # merged image tokens per sample (what the LLM sees)
    patches: int  # vision-tower patches per image
    label_tokens: int  # tokens per sample that carry a loss


def batch_shape(cfg: Any, micro_batch: int, image_size: int, text_tokens: int) -> BatchShape:
    v = cfg.vision_config
    grid = image_size // v.patch_size
    patches = grid * grid
    image_tokens = patches // (v.spatial_merge_size**2)
    return BatchShape(
        micro_batch=micro_batch,
        seq_len=text_tokens + image_tokens + 2,
        image_tokens=image_tokens,
        patches=patches,
        label_tokens=text_tokens // 2,
    )


def make_batch(
    cfg: Any, shape: BatchShape, image_size: int, device: torch.device, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """A batch laid out as Qwen3VLProcessor lays it out for one image per sample.

    Sample: <prompt text> <|vision_start|> <|image_pad|> * image_tokens <|vision_end|> <answer>;
    loss on the answer half of the text only. pixel_values holds the patches of every image,
    (num_patches, channels * temporal_patch * patch * patch), image_grid_thw (1, h, w) per image,
    mm_token_type_ids 1 on image-pad tokens and 0 elsewhere.
    """
    v = cfg.vision_config
    b = shape.micro_batch
    g = torch.Generator().manual_seed(1234)
    text_tokens = shape.seq_len - shape.image_tokens - 2
    prompt = text_tokens - shape.label_tokens
    low = 10  # stay clear of any special ids
    high = min(cfg.text_config.vocab_size, cfg.vision_start_token_id) - 1
    input_ids = torch.randint(low, high, (b, shape.seq_len), generator=g)
    input_ids[:, prompt] = cfg.vision_start_token_id
    img = slice(prompt + 1, prompt + 1 + shape.image_tokens)
    input_ids[:, img] = cfg.image_token_id
    input_ids[:, prompt + 1 + shape.image_tokens] = cfg.vision_end_token_id
    mm_token_type_ids = torch.zeros_like(input_ids)
    mm_token_type_ids[:, img] = 1
    labels = torch.full_like(input_ids, -100)
    labels[:, -shape.label_tokens :] = input_ids[:, -shape.label_tokens :]
    grid = image_size // v.patch_size
    patch_dim = v.in_channels * v.temporal_patch_size * v.patch_size * v.patch_size
    pixel_values = torch.randn(b * shape.patches, patch_dim, generator=g)
    image_grid_thw = torch.tensor([[1, grid, grid]] * b, dtype=torch.long)
    return {
        "input_ids": input_ids.to(device),
        "attention_mask": torch.ones_like(input_ids).to(device),
        "mm_token_type_ids": mm_token_type_ids.to(device),
        "labels": labels.to(device),
        "pixel_values": pixel_values.to(device=device, dtype=dtype),
        "image_grid_thw": image_grid_thw.to(device),
    }


def count_linear_params(model: Any) -> dict[str, int]:
    """Weights of the matmuls, by where they run (vision patches, merged tokens, LLM, head)."""
    counts = {
        "vision_patch": 0,
        "vision_merger": 0,
        "llm": 0,
        "lm_head": 0,
        "lora": 0,
        "trainable": 0,
        "total": 0,
    }
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear | torch.nn.Conv3d):
            n = module.weight.numel()
            if "lora_" in name:
                counts["lora"] += n
            elif ".visual." in f".{name}" or name.startswith("visual"):
                key = "vision_merger" if "merger" in name else "vision_patch"
                counts[key] += n
            elif name.endswith("lm_head"):
                counts["lm_head"] += n
            elif "language_model" in name:
                counts["llm"] += n
    for p in model.parameters():
        counts["total"] += p.numel()
        if p.requires_grad:
            counts["trainable"] += p.numel()
    return counts


def flop_model(
    cfg: Any, params: dict[str, int], shape: BatchShape, grad_ckpt: bool
) -> dict[str, float]:
    """FLOPs of one optimizer step (see bench/README.md, "FLOP model").

    Frozen base weights: forward 2*N*tokens, backward only the activation gradients 2*N*tokens
    (no weight gradients), so ~4*N*tokens for the LLM, not the 6*N*tokens of full fine-tuning.
    The vision tower is frozen and no gradient reaches it: forward only. LoRA matrices:
    6*N_lora*tokens. Attention: causal 2*S^2*heads*head_dim per layer forward, twice that
    backward; vision attention is bidirectional, 4*P^2*hidden per layer, forward only.
    Gradient checkpointing re-runs the LLM forward: counted in hardware FLOPs only.
    """
    t, v = cfg.text_config, cfg.vision_config
    b = shape.micro_batch
    tokens = b * shape.seq_len
    patches = b * shape.patches
    merged = b * shape.image_tokens
    attn_llm_fwd = (
        t.num_hidden_layers * b * 2.0 * shape.seq_len**2 * t.num_attention_heads * t.head_dim
    )
    attn_vis_fwd = v.depth * b * 4.0 * shape.patches**2 * v.hidden_size
    vision_fwd = (
        2.0 * params["vision_patch"] * patches + 2.0 * params["vision_merger"] * merged
    ) + attn_vis_fwd
    llm_layers_fwd = 2.0 * params["llm"] * tokens + attn_llm_fwd
    head_fwd = 2.0 * params["lm_head"] * tokens
    llm_bwd = 2.0 * params["llm"] * tokens + 2.0 * attn_llm_fwd + head_fwd
    lora = 6.0 * params["lora"] * tokens
    model_flops = vision_fwd + llm_layers_fwd + head_fwd + llm_bwd + lora
    recompute = llm_layers_fwd if grad_ckpt else 0.0
    return {
        "vision_fwd": vision_fwd,
        "llm_fwd": llm_layers_fwd + head_fwd,
        "llm_bwd": llm_bwd,
        "lora": lora,
        "recompute": recompute,
        "model_flops_per_step": model_flops,
        "hardware_flops_per_step": model_flops + recompute,
    }


def _sync(device: torch.device) -> None:
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
    _sync(device)
    reps = 10
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    elapsed = time.perf_counter() - start
    del a, b
    return 2.0 * n**3 * reps / elapsed / 1e12


def apply_lora(model: Any, lora: str, dropout: float) -> Any:
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=8,
        lora_alpha=32,
        lora_dropout=dropout,
        target_modules=LORA_TARGETS[lora],
        bias="none",
    )
    return get_peft_model(model, config)


def set_grad_ckpt(model: Any, on: bool) -> None:
    """Activation checkpointing on or off (transformers >= 5.24 renamed the methods)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if on:
            enable = getattr(model, "activation_checkpointing_enable", None)
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
        else:
            disable = getattr(model, "activation_checkpointing_disable", None)
            (disable or model.gradient_checkpointing_disable)()


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
        _sync(device)
        start = time.perf_counter()
        losses.append(train_step(model, optimizer, batch))  # float() waits for the step
        _sync(device)
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


def environment(device: torch.device) -> dict[str, Any]:
    import peft
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device_name": name or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "python": platform.python_version(),
        "date": dt.date.today().isoformat(),
    }


def results_name(device_name: str, date: str) -> str:
    """bench/results/<device-name>-<date>.json, e.g. nvidia-h200-2026-11-28.json."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "unknown"
    return f"{slug}-{date}.json"


def write(path: Path | None, result: dict[str, Any]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    tmp.replace(path)


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
        _sync(device)
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


def summary_line(device_name: str, run: dict[str, Any]) -> str:
    if "error" in run:
        return f"  {run['preset']} mb={run['micro_batch']} {run['lora']}: {run['error']}"
    return (
        f"  {run['preset']} mb={run['micro_batch']} lora={run['lora_targets']} "
        f"ckpt={run['gradient_checkpointing']}: {run['samples_per_s']:.2f} samples/s, "
        f"{run['step_time_s_median'] * 1e3:.1f} ms/step, peak {run['peak_memory_gib']} GiB, "
        f"mfu {run['mfu']}"
    )


def table(result: dict[str, Any]) -> str:
    def fmt(x: float | None, spec: str) -> str:
        return "-" if x is None else format(x, spec)

    name = result["environment"]["device_name"]
    rows = [
        "| device | preset | LoRA | grad ckpt | micro-batch | samples/s | tokens/s | "
        "step ms | peak GiB | MFU |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in result["runs"]:
        if "error" in r:
            rows.append(
                f"| {name} | {r['preset']} | {r['lora']} | {r['grad_ckpt']} | {r['micro_batch']} "
                f"| {r['error'][:40]} | | | | |"
            )
            continue
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        rows.append(
            f"| {name} | {r['preset']} | {r['lora_targets']} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | {r['micro_batch']} | "
            f"{r['samples_per_s']:.2f} | {r['tokens_per_s']:.0f} | "
            f"{r['step_time_s_median'] * 1e3:.1f} | {fmt(r['peak_memory_gib'], '.2f')} | {mfu} |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
