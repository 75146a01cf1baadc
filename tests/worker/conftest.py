"""Fixtures for the recipe tests: one tiny Qwen3-VL per session and a small corner dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.hyperparameters import Hyperparameters

CORNERS = {
    "top left": (0, 0),
    "top right": (40, 0),
    "bottom left": (0, 40),
    "bottom right": (40, 40),
}
QUESTION = "Which corner is the defect in?"


def write_corner_dataset(root: Path, n: int = 6) -> Path:
    """n 64x64 white images, each with a red square in one corner, and the seed's annotations."""
    from PIL import Image, ImageDraw

    (root / "images").mkdir(parents=True)
    annotations = {}
    for i in range(n):
        answer = list(CORNERS)[i % len(CORNERS)]
        x, y = CORNERS[answer]
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).rectangle([x, y, x + 23, y + 23], fill="red")
        name = f"case{i}.png"
        image.save(root / "images" / name)
        annotations[name] = {"question": QUESTION, "answer": answer}
    (root / "annotations.json").write_text(json.dumps(annotations))
    return root


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corner_dataset(tmp_path_factory.mktemp("dataset"))


@pytest.fixture(scope="session")
def artifact_dir(
    tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path, tiny_model_dir: str
) -> Path:
    from worker.recipe.preprocess import build_artifact

    out = tmp_path_factory.mktemp("artifact")
    hp = Hyperparameters.model_validate({"seed": 1, "augmentation": {"enabled": False}})
    build_artifact(dataset_dir, tiny_model_dir, out, hyperparameters=hp)
    return out


@pytest.fixture(scope="session")
def full_run(
    tmp_path_factory: pytest.TempPathFactory, train_artifact_dir: Path, tiny_model_dir: str
) -> tuple[Any, Any]:
    """(TrainResult, Recorder) of one uninterrupted run over all epochs of
    tests.worker.recipe_helpers.HP: the reference for the resume tests."""
    from tests.worker.recipe_helpers import HP, Recorder, train

    recorder = Recorder()
    out = tmp_path_factory.mktemp("full")
    result = train(
        train_artifact_dir, tiny_model_dir, out, 0, HP["total_epochs"], recorder=recorder
    )
    return result, recorder


@pytest.fixture(scope="session")
def train_artifact_dir(
    tmp_path_factory: pytest.TempPathFactory, dataset_dir: Path, tiny_model_dir: str
) -> Path:
    """The training tests' artifact: 5 train samples and 1 validation sample, no augmented
    copies, so that their step counts stay fixed whatever the augmentation defaults are."""
    from worker.recipe.preprocess import build_artifact

    out = tmp_path_factory.mktemp("train-artifact")
    hp = Hyperparameters.model_validate(
        {"seed": 1, "validation_samples": 1, "augmentation": {"enabled": False}}
    )
    build_artifact(dataset_dir, tiny_model_dir, out, hyperparameters=hp)
    return out
