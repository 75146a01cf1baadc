"""The estimator's hardcoded figures agree with the recipe they describe."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.estimate import DatasetSize, validation_count, work_for
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.model_shapes import SHAPES, TINY, model_key_for
from tests.worker.recipe_helpers import HP
from worker.recipe.preprocess import split_validation, validation_from_dataset


def _base(model_dir: str) -> Any:
    import torch

    from worker.recipe.lora import load_base

    return load_base(model_dir, torch.device("cpu"), torch.float32)


def test_tiny_catalog_counts_are_the_built_models(tiny_model_dir: str) -> None:
    base = _base(tiny_model_dir)
    shape = SHAPES[model_key_for(tiny_model_dir)]
    assert shape.key == TINY
    assert sum(p.numel() for p in base.parameters()) == shape.total_params
    vision = sum(p.numel() for n, p in base.named_parameters() if n.startswith("model.visual."))
    assert vision == shape.vision_params
    text = base.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.intermediate_size) == (
        shape.layers,
        shape.hidden_size,
        shape.intermediate_size,
    )
    assert (text.num_attention_heads, text.num_key_value_heads, text.head_dim) == (
        shape.attention_heads,
        shape.kv_heads,
        shape.head_dim,
    )


@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear", ["o_proj", "up_proj"]])
def test_tiny_lora_counts_are_what_peft_trains(tiny_model_dir: str, targets: Any) -> None:
    from worker.recipe.lora import wrap_with_lora

    hp = Hyperparameters.model_validate({**HP, "target_modules": targets, "seed": 0})
    model = wrap_with_lora(_base(tiny_model_dir), hp)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == SHAPES[TINY].lora_params(targets, rank=HP["lora_rank"])


@pytest.mark.parametrize("requested", [None, 0, 1, 2, 5])
def test_validation_count_mirrors_the_preprocess_split(requested: int | None) -> None:
    for num_samples in range(1, 60):
        if requested is not None and requested >= num_samples and requested > 0:
            continue  # refused by preprocessing
        _, val, _ = split_validation(num_samples, requested, seed=0)
        assert validation_count(num_samples, requested) == len(val), num_samples


@pytest.mark.parametrize("copies", [0, 2])
def test_work_with_a_validation_data_set_mirrors_the_preprocess_hold_out(copies: int) -> None:
    hp = Hyperparameters(augmentation={"enabled": copies > 0, "copies": copies}, seed=0)
    for num_train, num_val in [(1, 1), (3, 2), (20, 5), (200, 7)]:
        train, val, _ = validation_from_dataset(num_train, num_val, "d", "annotations_json")
        held_out = DatasetSize(num_val, num_val, 0)
        work = work_for(hp, DatasetSize(num_train, num_train, 0, validation=held_out))
        assert work.validation == len(val), (num_train, num_val)
        assert work.train_per_epoch == len(train) * (1 + copies)
        # build_artifact: every original of both sets, then copies of the training samples.
        assert work.artifact_samples == len(train) + len(val) + len(train) * copies
