"""Which base models a job may name, checked without loading any weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.base_models import check_fits_model, known_names, resolve_base_model
from orchestrator.errors import InvalidRequest
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.settings import Settings

QWEN3_VL_CONFIG = {"model_type": "qwen3_vl", "architectures": ["Qwen3VLForConditionalGeneration"]}
PROCESSOR = {
    "image_processor": {
        "patch_size": 16,
        "merge_size": 2,
        "size": {"shortest_edge": 4096, "longest_edge": 16384},
    }
}


def _model(directory: Path) -> Path:
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(QWEN3_VL_CONFIG))
    (directory / "processor_config.json").write_text(json.dumps(PROCESSOR))
    return directory


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    root = tmp_path / "srv" / "models"
    _model(root / "my-vlm")
    _model(root / "Qwen" / "Qwen3-VL-2B-Instruct")
    _model(tmp_path / "elsewhere")  # a model directory outside the root
    (root / "escape").symlink_to(tmp_path / "elsewhere")
    (root / "no-config").mkdir()
    return Settings(
        data_dir=tmp_path / "data", model_root=root, allowed_models=["Qwen/Qwen3-VL-8B-Instruct"]
    )


def test_names_the_server_knows(settings: Settings) -> None:
    assert known_names(settings) == [
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
        "my-vlm",
        "tiny-qwen3-vl",
    ]
    root = settings.model_root
    assert root is not None
    mine = resolve_base_model("my-vlm", settings)
    assert (mine.name, mine.location) == ("my-vlm", str(root / "my-vlm"))
    assert mine.config == QWEN3_VL_CONFIG
    nested = resolve_base_model("Qwen/Qwen3-VL-2B-Instruct", settings)
    assert nested.location == str(root / "Qwen" / "Qwen3-VL-2B-Instruct")
    # the default is known before a worker has written it
    assert resolve_base_model("tiny-qwen3-vl", settings).location == str(root / "tiny-qwen3-vl")
    # a path inside the root is stored and shown by its registered name
    assert resolve_base_model(f"{root}/my-vlm/", settings).name == "my-vlm"
    assert resolve_base_model("./Qwen/../my-vlm", settings).name == "my-vlm"
    hub = resolve_base_model("Qwen/Qwen3-VL-8B-Instruct", settings)
    assert (hub.name, hub.location) == ("Qwen/Qwen3-VL-8B-Instruct", "Qwen/Qwen3-VL-8B-Instruct")


@pytest.mark.parametrize(
    "name",
    [
        "/etc",
        "../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "",
        "my-vlm/../..",
        "no-config",
        "escape",
        "nope",
        "Qwen",
        "Qwen/Qwen3-VL-4B-Instruct",
        "/",
        "~",
        "my\x00vlm",
        "x" * 300,
        "a/" * 3000,
    ],
)
def test_anything_else_is_one_unknown_model_error(settings: Settings, name: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        resolve_base_model(name, settings)
    error = raised.value
    assert error.param == "base_model"
    if not name:
        return
    assert error.code == "unknown_model"
    # The same words whatever lies on the server's disk: nothing to probe with.
    assert error.message == (
        f"unknown base_model '{name[:200]}'; known models: " + ", ".join(known_names(settings))
    )


def test_lora_targets_and_pixel_bounds_are_checked_against_the_config(
    settings: Settings,
) -> None:
    model = resolve_base_model("my-vlm", settings)
    check_fits_model(Hyperparameters(target_modules=["q_proj", "down_proj"]), model)
    check_fits_model(Hyperparameters(target_modules="all-linear"), model)
    with pytest.raises(InvalidRequest) as raised:
        check_fits_model(Hyperparameters(target_modules=["q_proj", "qkv"]), model)
    assert raised.value.param == "hyperparameters.target_modules"
    assert "['qkv']" in raised.value.message
    with pytest.raises(InvalidRequest) as raised:
        check_fits_model(Hyperparameters(min_pixels=20000), model)
    assert raised.value.param == "hyperparameters.min_pixels"
    assert "16384" in raised.value.message
    check_fits_model(Hyperparameters(min_pixels=20000, max_pixels=40000), model)
    # a model whose config cannot be read here is left to the worker
    check_fits_model(
        Hyperparameters(target_modules=["qkv"], min_pixels=10**9),
        resolve_base_model("Qwen/Qwen3-VL-8B-Instruct", settings),
    )


def test_an_operator_default_other_than_the_tiny_model_is_known(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path,
        model_root=tmp_path / "models",
        default_base_model="Qwen/Qwen3-VL-8B-Instruct",
        allowed_models=[],
    )
    model = resolve_base_model("Qwen/Qwen3-VL-8B-Instruct", settings)
    assert (model.name, model.location) == (
        "Qwen/Qwen3-VL-8B-Instruct",
        "Qwen/Qwen3-VL-8B-Instruct",
    )
    with pytest.raises(InvalidRequest):  # the tiny model is no longer the default
        resolve_base_model("tiny-qwen3-vl", settings)
    # an empty setting (compose passes one through) means the tiny default
    assert Settings(data_dir=tmp_path, default_base_model=" ").default_base_model == (
        "tiny-qwen3-vl"
    )
