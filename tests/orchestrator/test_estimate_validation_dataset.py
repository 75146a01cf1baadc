"""The estimate of a job that names a validation data set: counted as the worker uses it (the
training set trains whole, the validation set is held out whole and never augmented)."""

from __future__ import annotations

import pytest

from orchestrator.estimate import (
    DatasetSize,
    PhaseEstimate,
    work_for,
)
from orchestrator.hyperparameters import Hyperparameters
from tests.orchestrator.estimator_helpers import TWENTY, plan_8b

FIVE = DatasetSize(num_samples=5, num_images=5, bytes=1_500_000)
TWENTY_WITH_FIVE = DatasetSize(20, 20, 6_000_000, validation=FIVE)


def _relay(hp: Hyperparameters, dataset: DatasetSize = TWENTY) -> dict[str, PhaseEstimate]:
    """Each phase of the 8B relay by name."""
    return {p.phase: p for p in plan_8b(hp, dataset).phases}


def test_a_validation_data_set_replaces_the_split() -> None:
    hp = Hyperparameters()  # 1 augmented copy of each training sample
    split = work_for(hp, TWENTY)
    assert (split.validation, split.train_per_epoch, split.artifact_samples) == (3, 34, 37)
    held_out = work_for(hp, TWENTY_WITH_FIVE)
    assert held_out.validation == 5
    assert held_out.train_per_epoch == 20 * 2  # every training sample and its copy
    assert held_out.artifact_samples == 20 + 5 + 20  # both sets, copies of training only


def test_training_phases_train_the_whole_set_and_validate_on_the_other() -> None:
    hp = Hyperparameters()
    split, held_out = _relay(hp), _relay(hp, TWENTY_WITH_FIVE)
    assert (split["warmup"].samples, split["final"].samples) == (5 * 34, 3 * 34)
    assert (held_out["warmup"].samples, held_out["final"].samples) == (5 * 40, 3 * 40)
    # The final evaluation scores every validation sample: 5 instead of 3.
    assert held_out["final"].seconds["evaluate"] == pytest.approx(
        split["final"].seconds["evaluate"] * 5 / 3
    )
    # Training seconds hold each epoch's validation pass over the validation set.
    rate = split["warmup"].seconds["train"] / (5 * 34 + 5 * 3 / 3)
    assert held_out["warmup"].seconds["train"] == pytest.approx(rate * (5 * 40 + 5 * 5 / 3))


def test_preprocessing_downloads_and_tokenizes_both_sets() -> None:
    hp = Hyperparameters()
    split, held_out = _relay(hp), _relay(hp, TWENTY_WITH_FIVE)
    assert (split["preprocess"].samples, held_out["preprocess"].samples) == (37, 45)
    training_only = split["preprocess"].seconds["input_download"]
    assert held_out["preprocess"].seconds["input_download"] > training_only
    assert TWENTY_WITH_FIVE.input_bytes == 7_500_000


def test_a_one_sample_training_set_validates_on_its_validation_set() -> None:
    """Without a validation data set one sample cannot be split: no validation, no best
    checkpoints, no evaluation. With one, all of that runs."""
    hp = Hyperparameters(augmentation={"enabled": False})
    one = DatasetSize(1, 1, 300_000)
    alone = _relay(hp, one)
    assert alone["final"].seconds["evaluate"] == 0
    validated = _relay(hp, DatasetSize(1, 1, 300_000, validation=FIVE))
    assert validated["warmup"].samples == alone["warmup"].samples == 5
    assert validated["final"].seconds["evaluate"] > 0
    # A best checkpoint at each of the warmup's 5 epoch ends (an upper bound).
    assert validated["warmup"].checkpoints == alone["warmup"].checkpoints + 5
