"""The model under test: random weights in a preset's shapes, a LoRA adapter on it."""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .shapes import LORA_TARGETS, PRESETS


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
