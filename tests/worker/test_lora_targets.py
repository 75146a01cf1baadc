"""Which modules get LoRA, by module path, for each targeting option on the tiny Qwen3-VL."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from tests.worker.recipe_helpers import HP
from worker.recipe.lora import language_model_targets, lora_module_names, wrap_with_lora

LAYERS = (0, 1)
VISION_BLOCKS = (0, 1)
LM_LINEAR = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


def _lm(names: tuple[str, ...]) -> set[str]:
    return {f"model.language_model.layers.{i}.{n}" for i in LAYERS for n in names}


VISION = {
    f"model.visual.blocks.{i}.{n}"
    for i in VISION_BLOCKS
    for n in ("attn.qkv", "attn.proj", "mlp.linear_fc1", "mlp.linear_fc2")
}
MERGERS = {
    f"model.visual.{m}.{n}"
    for m in ("merger", "deepstack_merger_list.0", "deepstack_merger_list.1")
    for n in ("linear_fc1", "linear_fc2")
}


def _wrapped(model_dir: str, **options: Any) -> Any:
    import torch

    from worker.recipe.lora import load_base

    base = load_base(model_dir, torch.device("cpu"), torch.float32)
    return wrap_with_lora(base, Hyperparameters.model_validate({**HP, **options, "seed": 0}))


def test_target_regex_stays_inside_the_language_model() -> None:
    pattern = language_model_targets(["q_proj", "v_proj", "gate_proj"])
    assert re.fullmatch(pattern, "model.language_model.layers.0.self_attn.q_proj")
    assert re.fullmatch(pattern, "model.language_model.layers.3.mlp.gate_proj")
    assert not re.fullmatch(pattern, "model.visual.blocks.0.mlp.gate_proj")
    assert not re.fullmatch(pattern, "model.language_model.layers.0.self_attn.k_proj")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, _lm(("self_attn.q_proj", "self_attn.v_proj"))),
        ({"target_modules": "all-linear"}, _lm(LM_LINEAR)),
        ({"tune_vision": True}, _lm(("self_attn.q_proj", "self_attn.v_proj")) | VISION),
        ({"tune_merger": True}, _lm(("self_attn.q_proj", "self_attn.v_proj")) | MERGERS),
        (
            {"target_modules": "all-linear", "tune_vision": True, "tune_merger": True},
            _lm(LM_LINEAR) | VISION | MERGERS,
        ),
    ],
    ids=["default", "all-linear", "vision", "merger", "everything"],
)
def test_lora_goes_where_asked(
    tiny_model_dir: str, options: dict[str, Any], expected: set[str]
) -> None:
    model = _wrapped(tiny_model_dir, **options)
    names = set(lora_module_names(model))
    assert names == expected
    # all-linear means the language model's linear layers: never the output head.
    assert not any("lm_head" in n for n in names)


def test_modules_to_save_are_trained_and_saved_in_full(tiny_model_dir: str, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    model = _wrapped(tiny_model_dir, modules_to_save=["lm_head"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lm_head.modules_to_save" in n for n in trainable)
    model.save_pretrained(tmp_path)
    saved = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert any(k.endswith("lm_head.weight") for k in saved)


def test_unknown_target_names_are_refused(tiny_model_dir: str) -> None:
    with pytest.raises(ValueError, match="not_a_layer"):
        _wrapped(tiny_model_dir, target_modules=["not_a_layer"])
