"""Loading the base model and wrapping it with LoRA: the language model by default, the vision
tower and the mergers on request."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.hyperparameters import Hyperparameters

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def load_base(model_dir: str, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForImageTextToText

    model: Any = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=dtype)
    return model.to(device)


# Where LoRA may go, as module-path scopes. In Qwen-VL the vision tower reuses names such as
# `qkv`, `proj` and (in Qwen2.5-VL) `gate_proj`, so targets are always matched inside a scope:
# a bare suffix list would put LoRA into the vision tower too. lm_head lies outside them all.
LANGUAGE_MODEL_SCOPE = r"language_model"
VISION_BLOCKS_SCOPE = r"visual\.blocks\.\d+"
# Qwen3-VL has a merger after the last block and one per deepstack layer; Qwen2.5-VL only one.
MERGER_SCOPE = r"visual\.(?:merger|deepstack_merger_list\.\d+)"


def scoped_targets(scope: str, names: list[str]) -> str:
    """A regex that full-matches module paths inside `scope` whose last part is one of names
    (peft full-matches a string target against each module path)."""
    alternatives = "|".join(re.escape(name) for name in sorted(set(names)))
    return rf"^(?:.*\.)?{scope}\.(?:.*\.)?(?:{alternatives})$"


def language_model_targets(target_modules: list[str]) -> str:
    """A regex that matches the named projections inside the language model only."""
    return scoped_targets(LANGUAGE_MODEL_SCOPE, target_modules)


def linear_names(model: Any, scope: str) -> list[str]:
    """Last path parts of every nn.Linear inside `scope`."""
    import torch

    inside = re.compile(rf"^(?:.*\.)?{scope}\.")
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and inside.match(name)
        }
    )


def target_regex(model: Any, hp: Hyperparameters) -> str:
    """The module paths that get LoRA: the language model's named projections (or all its
    linear layers), plus the vision blocks and the mergers on request."""
    requested = hp.target_modules
    names = (
        linear_names(model, LANGUAGE_MODEL_SCOPE) if requested == "all-linear" else list(requested)
    )
    patterns = [language_model_targets(names)]
    extra_scopes = (
        ("tune_vision", hp.tune_vision, VISION_BLOCKS_SCOPE),
        ("tune_merger", hp.tune_merger, MERGER_SCOPE),
    )
    for flag, wanted, scope in extra_scopes:
        if wanted:
            found = linear_names(model, scope)
            if not found:
                raise ValueError(f"{flag}: this model has no linear layers in {scope!r}")
            patterns.append(scoped_targets(scope, found))
    return "|".join(f"(?:{p})" for p in patterns)


def lora_config(hp: Hyperparameters, model: Any) -> Any:
    from peft import LoraConfig, TaskType

    # peft annotates lora_alpha as int but only computes alpha / r, so a float alpha is kept.
    options: dict[str, Any] = {
        "r": hp.lora_rank,
        "lora_alpha": hp.lora_alpha,
        "lora_dropout": hp.lora_dropout,
        "target_modules": target_regex(model, hp),
        "modules_to_save": list(hp.modules_to_save) or None,
        "bias": "none",
        "task_type": TaskType.CAUSAL_LM,
    }
    return LoraConfig(**options)


def wrap_with_lora(base: Any, hp: Hyperparameters) -> Any:
    """Add fresh LoRA layers; the job's seed fixes their initial values (A is random, B is
    zero).

    Trainable parameters are kept in fp32 whatever the base's dtype: they are the optimizer's
    master copy, and fp16 gradients could not be unscaled by a GradScaler.
    """
    import torch
    from peft import get_peft_model

    # fork_rng: the init is seeded without disturbing the RNG stream that dropout will use.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hp.seed)
        model = get_peft_model(base, lora_config(hp, base))
    trainable = [p for p in model.parameters() if p.requires_grad]
    for param in trainable:
        if param.dtype != torch.float32:
            param.data = param.data.float()
    total = sum(p.numel() for p in model.parameters())
    if not trainable:
        raise ValueError(f"target_modules {hp.target_modules} match no language-model layer")
    count = sum(p.numel() for p in trainable)
    logger.info("LoRA: %d of %d parameters trainable (%.3f%%)", count, total, 100.0 * count / total)
    return model


def lora_module_names(model: Any) -> list[str]:
    """Paths (as in the base model) of the modules that carry LoRA layers."""
    from peft.tuners.lora import LoraLayer

    prefix = "base_model.model."
    return sorted(
        name.removeprefix(prefix)
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    )


def enable_gradient_checkpointing(model: Any) -> None:
    """Recompute activations in backward instead of keeping them.

    Non-reentrant checkpointing works although the frozen inputs need no grad; the input-grad
    hook is still set for models whose checkpointing is reentrant. use_cache must be off: a KV
    cache is incompatible with recomputation.
    """
    base = model.get_base_model()
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    base.config.use_cache = False


def load_adapter_weights(model: Any, adapter_dir: Path) -> None:
    """Load saved LoRA weights into a model wrapped by wrap_with_lora with the same config."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, state)
    unexpected = list(getattr(result, "unexpected_keys", []))
    if unexpected:
        raise ValueError(f"adapter at {adapter_dir} has keys this model lacks: {unexpected[:5]}")
