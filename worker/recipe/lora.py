"""Loading the base model and wrapping it with LoRA on the language model only."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def pick_device() -> tuple[torch.device, torch.dtype]:
    """bf16 on a GPU that supports it; fp32 otherwise (fp16 would need loss scaling)."""
    import torch

    if torch.cuda.is_available():
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        return torch.device("cuda"), dtype
    return torch.device("cpu"), torch.float32


def load_base(model_dir: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForImageTextToText

    model: Any = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype)
    return model.to(device)


def language_model_targets(target_modules: list[str]) -> str:
    """A regex over module paths that matches the named projections inside the language model.

    Qwen-VL's vision tower reuses names such as `qkv`, `proj` and (in Qwen2.5-VL) `gate_proj`,
    so a bare suffix list would put LoRA into the vision tower too. peft full-matches a string
    target against each module path.
    """
    names = "|".join(re.escape(name) for name in target_modules)
    return rf"^(?:.*\.)?language_model\.(?:.*\.)?(?:{names})$"


def lora_config(hyperparameters: dict[str, Any]) -> Any:
    from peft import LoraConfig, TaskType

    # peft annotates lora_alpha as int but only computes alpha / r, so a float alpha is kept.
    options: dict[str, Any] = {
        "r": int(hyperparameters["lora_rank"]),
        "lora_alpha": float(hyperparameters["lora_alpha"]),
        "lora_dropout": float(hyperparameters["lora_dropout"]),
        "target_modules": language_model_targets(list(hyperparameters["target_modules"])),
        "bias": "none",
        "task_type": TaskType.CAUSAL_LM,
    }
    return LoraConfig(**options)


def wrap_with_lora(base: Any, hyperparameters: dict[str, Any], seed: int) -> Any:
    """Add fresh LoRA layers; the seed fixes their initial values (A is random, B is zero)."""
    import torch
    from peft import get_peft_model

    # fork_rng: the init is seeded without disturbing the RNG stream that dropout will use.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, lora_config(hyperparameters))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if trainable == 0:
        raise ValueError(
            f"target_modules {hyperparameters['target_modules']} match no language-model layer"
        )
    logger.info(
        "LoRA: %d of %d parameters trainable (%.3f%%)", trainable, total, 100.0 * trainable / total
    )
    return model


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Load saved LoRA weights into a model wrapped by wrap_with_lora with the same config."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ValueError(f"adapter at {adapter_dir} has keys this model lacks: {unexpected[:5]}")
