"""The preprocess phase on the tiny model: split, augmentation, pixel caps, loss mask, limits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InvalidDataset, InvalidRequest
from orchestrator.hyperparameters import Hyperparameters
from tests.worker.conftest import write_corner_dataset
from worker.recipe.data import IGNORE_INDEX
from worker.recipe.preprocess import build_artifact, load_artifact, split_validation

NO_AUGMENTATION: dict[str, Any] = {"enabled": False}


def _image(path: Path, size: tuple[int, int], color: str = "white") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _messages_dataset(
    root: Path, rows: list[dict[str, Any]], sizes: dict[str, tuple[int, int]]
) -> Path:
    for name, size in sizes.items():
        _image(root / name, size)
    (root / "data.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return root


def _build(dataset: Path, model: str, out: Path, **hp: Any) -> tuple[dict[str, Any], list[Any]]:
    build_artifact(
        dataset, model, out, hyperparameters=Hyperparameters.model_validate({"seed": 7, **hp})
    )
    return load_artifact(out)


def _label_runs(sample: dict[str, Any]) -> list[list[int]]:
    """The contiguous runs of trained label ids."""
    runs: list[list[int]] = []
    previous = False
    for token in sample["labels"].tolist():
        trained = token != IGNORE_INDEX
        if trained and not previous:
            runs.append([])
        if trained:
            runs[-1].append(token)
        previous = trained
    return runs


@pytest.fixture(scope="module")
def corners(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corner_dataset(tmp_path_factory.mktemp("corners"), n=8)


@pytest.fixture(scope="module")
def processor(tiny_model_dir: str) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(
    ("n", "requested", "val_count", "strategy"),
    [
        (1, None, 0, "none"),
        (6, None, 1, "seeded_random"),
        (12, None, 2, "seeded_random"),
        (20, None, 3, "seeded_random"),
        (40, None, 4, "seeded_random"),
        (6, 0, 0, "none"),
        (6, 5, 5, "seeded_random"),
    ],
)
def test_split_sizes_and_notes(
    n: int, requested: int | None, val_count: int, strategy: str
) -> None:
    train, val, record = split_validation(n, requested, seed=3)
    assert (len(val), record["count"], record["strategy"]) == (val_count, val_count, strategy)
    assert sorted(train + val) == list(range(n)) and not set(train) & set(val)
    assert record["note"]
    assert split_validation(n, requested, seed=3)[:2] == (train, val)


def test_split_is_seeded_and_refuses_leaving_nothing_to_train() -> None:
    assert len({tuple(split_validation(20, None, seed)[1]) for seed in range(5)}) > 1
    assert split_validation(20, None, 1) == split_validation(20, None, 1)
    assert "too few" in split_validation(20, None, 1)[2]["note"]
    with pytest.raises(InvalidRequest) as excinfo:
        split_validation(4, 4, seed=0)
    assert excinfo.value.param == "validation_samples"


def test_augmentation_is_deterministic_recorded_and_train_only(
    corners: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    import torch

    augmentation = {"copies": 2, "rotation_degrees": 20, "crop_scale_min": 0.7, "color_jitter": 0.3}
    manifest, samples = _build(corners, tiny_model_dir, tmp_path / "a", augmentation=augmentation)
    again, same = _build(corners, tiny_model_dir, tmp_path / "b", augmentation=augmentation)
    assert manifest == again
    for left, right in zip(samples, same, strict=True):
        assert all(torch.equal(left[k], right[k]) for k in left)

    record = manifest["augmentation"]
    assert (record["enabled"], record["copies"], record["applied_to"]) == (True, 2, "train")
    assert [t["name"] for t in record["transforms"]] == [
        "RandomRotation",
        "RandomResizedCrop",
        "ColorJitter",
    ]
    assert record["transforms"][0]["degrees"] == [-20, 20]
    assert record["transforms"][1]["scale"] == [0.7, 1.0]
    assert record["transforms"][2]["brightness"] == 0.3
    val, originals = manifest["val"], 8
    assert record["augmented_samples"] == 2 * (originals - len(val)) == len(samples) - originals
    copies = manifest["token_counts"]["per_sample"][originals:]
    assert all(c["source"] not in val and c["copy"] in (1, 2) and c["seed"] for c in copies)
    assert manifest["train"][-len(copies) :] == list(range(originals, len(samples)))
    assert not set(manifest["val"]) & {c["source"] for c in copies}
    # Same size, so the same tokens; different pixels.
    first = copies[0]
    source = samples[first["source"]]
    copy = samples[originals]
    assert torch.equal(copy["input_ids"], source["input_ids"])
    assert not torch.equal(copy["pixel_values"], source["pixel_values"])

    _, other_seed = _build(
        corners, tiny_model_dir, tmp_path / "c", augmentation=augmentation, seed=8
    )
    assert not torch.equal(other_seed[-1]["pixel_values"], samples[-1]["pixel_values"])


@pytest.mark.parametrize(
    "augmentation",
    [
        {"enabled": False},
        {"copies": 0},
        {"rotation_degrees": 0, "crop_scale_min": 1, "color_jitter": 0},
    ],
    ids=["disabled", "no-copies", "no-transform"],
)
def test_augmentation_switches_off(
    corners: Path, tiny_model_dir: str, tmp_path: Path, augmentation: dict[str, Any]
) -> None:
    manifest, samples = _build(
        corners, tiny_model_dir, tmp_path, augmentation=augmentation, validation_samples=0
    )
    assert len(samples) == manifest["num_samples"] == 8
    assert manifest["augmentation"]["enabled"] is False
    assert manifest["augmentation"]["augmented_samples"] == 0
    assert manifest["val"] == [] and manifest["train"] == list(range(8))
    assert manifest["validation"]["strategy"] == "none"


@pytest.mark.parametrize(
    ("size", "hp", "tokens"),
    [
        ((128, 128), {}, 16),  # the processor's own cap: 128*128 pixels
        ((128, 128), {"max_pixels": 64 * 64}, 4),
        ((256, 64), {"max_pixels": 64 * 64}, 4),
        ((64, 64), {"min_pixels": 128 * 128}, 16),
    ],
)
def test_pixel_caps_bound_image_tokens(
    tiny_model_dir: str, tmp_path: Path, size: tuple[int, int], hp: dict[str, Any], tokens: int
) -> None:
    rows = [
        {
            "messages": [
                {"role": "user", "content": "<image>Which corner?"},
                {"role": "assistant", "content": "top left"},
            ],
            "images": ["a.png"],
        }
    ]
    dataset = _messages_dataset(tmp_path / "ds", rows, {"a.png": size})
    manifest, (sample,) = _build(
        dataset, tiny_model_dir, tmp_path / "out", augmentation=NO_AUGMENTATION, **hp
    )
    assert manifest["token_counts"]["image"] == tokens
    assert int(sample["image_grid_thw"].prod()) // 4 == tokens
    assert manifest["image_size"]["max_image_tokens"] >= tokens


def test_min_pixels_above_the_model_cap_is_refused(
    corners: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidRequest) as excinfo:
        _build(corners, tiny_model_dir, tmp_path, min_pixels=256 * 256)
    assert excinfo.value.param == "min_pixels"


def test_multi_turn_multi_image_loss_mask(
    tiny_model_dir: str, tmp_path: Path, processor: Any
) -> None:
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You inspect boards."},
                {"role": "user", "content": "<image><image>Which is broken?"},
                {"role": "assistant", "content": "the second"},
                {"role": "user", "content": "Where?"},
                {"role": "assistant", "content": "top left"},
            ],
            "images": ["a.png", "b.png"],
        }
    ]
    dataset = _messages_dataset(tmp_path / "ds", rows, {"a.png": (64, 64), "b.png": (128, 96)})
    manifest, (sample,) = _build(
        dataset, tiny_model_dir, tmp_path / "out", augmentation=NO_AUGMENTATION
    )
    decode = processor.tokenizer.decode
    assert [decode(run) for run in _label_runs(sample)] == [
        "the second<|im_end|>",
        "top left<|im_end|>",
    ]
    image_id = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = sample["image_grid_thw"]
    assert grid.tolist() == [[1, 4, 4], [1, 6, 8]]
    image_tokens = int((sample["input_ids"] == image_id).sum())
    assert image_tokens == int(grid.prod(dim=1).sum()) // 4 == 4 + 12
    assert sample["pixel_values"].shape[0] == int(grid.prod(dim=1).sum())
    assert int(sample["mm_token_type_ids"].sum()) == image_tokens
    assert not (sample["labels"][sample["input_ids"] == image_id] != IGNORE_INDEX).any()
    record = manifest["token_counts"]["per_sample"][0]
    assert (record["images"], record["image_tokens"], manifest["dataset_format"]) == (
        2,
        16,
        "messages",
    )


def test_seed_format_trains_on_answers_only(
    corners: Path, tiny_model_dir: str, tmp_path: Path, processor: Any
) -> None:
    manifest, samples = _build(corners, tiny_model_dir, tmp_path, augmentation=NO_AUGMENTATION)
    annotations = json.loads((corners / "annotations.json").read_text())
    assert manifest["files"] == sorted(annotations) and manifest["dataset_format"] == (
        "annotations_json"
    )
    for name, sample in zip(manifest["files"], samples, strict=True):
        (run,) = _label_runs(sample)
        assert processor.tokenizer.decode(run) == annotations[name]["answer"] + "<|im_end|>"


def test_openai_weight_zero_turn_is_not_trained(
    tiny_model_dir: str, tmp_path: Path, processor: Any
) -> None:
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": "Colour?"},
                ],
            },
            {"role": "assistant", "content": "blue", "weight": 0},
            {"role": "user", "content": "Sure?"},
            {"role": "assistant", "content": "red"},
        ]
    }
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "chat.jsonl").write_text(json.dumps(row))
    _, (sample,) = _build(
        tmp_path / "ds", tiny_model_dir, tmp_path / "out", augmentation=NO_AUGMENTATION
    )
    assert [processor.tokenizer.decode(r) for r in _label_runs(sample)] == ["red<|im_end|>"]


def test_samples_too_long_are_refused_not_cut(
    corners: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidDataset) as excinfo:
        build_artifact(
            corners,
            tiny_model_dir,
            tmp_path,
            max_length=8,
            hyperparameters=Hyperparameters.model_validate(
                {"seed": 0, "augmentation": NO_AUGMENTATION}
            ),
        )
    error = excinfo.value
    assert (error.code, error.param) == ("sample_too_long", "case0.png")
    assert [d["param"] for d in error.details or []] == [f"case{i}.png" for i in range(8)]
    assert "max_pixels" in error.message
    assert not (tmp_path / "manifest.json").exists()


def test_bad_rows_in_the_folder_are_all_named(tiny_model_dir: str, tmp_path: Path) -> None:
    root = write_corner_dataset(tmp_path / "ds", n=3)
    (root / "images" / "case1.png").unlink()
    (root / "images" / "case2.png").write_bytes(b"not an image")
    with pytest.raises(InvalidDataset) as excinfo:
        build_artifact(
            root, tiny_model_dir, tmp_path / "out", hyperparameters=Hyperparameters(seed=0)
        )
    assert [(d["param"], d["code"]) for d in excinfo.value.details or []] == [
        ("case1.png", "missing_image"),
        ("case2.png", "invalid_image"),
    ]


def test_a_validation_data_sets_problems_are_named_as_its_own(
    corners: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    held_out = write_corner_dataset(tmp_path / "held_out", n=2)
    (held_out / "images" / "case1.png").write_bytes(b"not an image")
    with pytest.raises(InvalidDataset) as excinfo:
        build_artifact(
            corners,
            tiny_model_dir,
            tmp_path / "out",
            hyperparameters=Hyperparameters(seed=0),
            validation_dir=held_out,
        )
    assert [(d["param"], d["code"]) for d in excinfo.value.details or []] == [
        ("validation:case1.png", "invalid_image")
    ]
