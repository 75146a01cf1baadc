"""A registered model under a name of its own is sized by its recorded config."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters
from orchestrator.memory import training_plan
from orchestrator.model_shapes import QWEN3_VL_8B, SHAPES, shape_from_config

# Qwen3-VL-8B-Instruct's config.json, the fields that size it.
CONFIG_8B: dict[str, Any] = {
    "model_type": "qwen3_vl",
    "tie_word_embeddings": False,
    "text_config": {
        "num_hidden_layers": 36,
        "hidden_size": 4096,
        "intermediate_size": 12288,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
    },
    "vision_config": {"depth": 27, "hidden_size": 1152},
}


def _with_text(**fields: Any) -> dict[str, Any]:
    return {**CONFIG_8B, "text_config": {**CONFIG_8B["text_config"], **fields}}


def test_a_catalog_shape_under_another_name_is_that_shape_under_its_name() -> None:
    shape = shape_from_config("acme-vl", CONFIG_8B, SHAPES[QWEN3_VL_8B].total_params)
    assert shape is not None
    assert (shape.key, shape.catalog_key) == ("acme-vl", QWEN3_VL_8B)
    catalog = SHAPES[QWEN3_VL_8B]
    assert (shape.total_params, shape.layers, shape.lora_params_qv) == (
        catalog.total_params,
        catalog.layers,
        catalog.lora_params_qv,
    )


def test_a_shape_the_catalog_lacks_is_counted_from_its_config() -> None:
    deeper = shape_from_config("acme-vl-deep", _with_text(num_hidden_layers=48), 11_000_000_000)
    assert deeper is not None
    catalog = SHAPES[QWEN3_VL_8B]
    assert (deeper.key, deeper.catalog_key, deeper.layers) == ("acme-vl-deep", QWEN3_VL_8B, 48)
    # The language model from the dimensions; the rest of the recorded count is vision.
    assert deeper.llm_params == pytest.approx(catalog.llm_params * 1.27, rel=0.02)
    assert deeper.total_params == 11_000_000_000
    assert deeper.activation_bytes_qv == pytest.approx(catalog.activation_bytes_qv * 48 / 36)
    # The memory check sizes it as what it is: larger than the 8B, still fits an A100.
    hp = Hyperparameters()
    plan = training_plan(deeper, hp, gpu_model="NVIDIA A100", gpu_memory_gb=80, supports_bf16=True)
    ref = training_plan(catalog, hp, gpu_model="NVIDIA A100", gpu_memory_gb=80, supports_bf16=True)
    assert plan.feasible and plan.peak_bytes > ref.peak_bytes


def test_a_config_without_a_decoders_dimensions_has_no_shape() -> None:
    assert shape_from_config("odd", {"model_type": "mystery"}, 1_000) is None
    assert shape_from_config("odd", _with_text(hidden_size="4096"), 1_000) is None
