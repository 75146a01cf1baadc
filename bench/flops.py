"""FLOPs of one LoRA step from parameter counts and shapes; the peak rates MFU is read against."""

from __future__ import annotations

from typing import Any

import torch

from .batches import BatchShape

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


def peak_tflops_for(device_name: str) -> float | None:
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


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
