"""The artifact stores resized 8-bit images instead of fp32 patches, and gives back exactly the
patches the processor made; older artifacts with fp32 patches still load and train the same."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.dataformats import DirectorySource, Problems, read_dataset
from orchestrator.hyperparameters import Hyperparameters
from tests.worker.recipe_helpers import assert_same_adapter, train
from worker.recipe.augment import AugmentationPlan, augment_image
from worker.recipe.pixels import IMAGE_PROCESSOR_DIR, IMAGES_KEY, compact_sample
from worker.recipe.preprocess import (
    MANIFEST_FILE,
    ChatEncoder,
    _decode_images,
    build_artifact,
    load_artifact,
)

V1 = "relaytune.tokenized.v1"


@pytest.fixture(scope="module")
def example_artifact(
    tmp_path_factory: pytest.TempPathFactory, example_dir: Path, tiny_model_dir: str
) -> Path:
    """The bundled example with the default hyperparameters (augmented copies included)."""
    out = tmp_path_factory.mktemp("example-artifact")
    build_artifact(example_dir, tiny_model_dir, out, hyperparameters=Hyperparameters())
    return out


def _direct_samples(
    dataset_dir: Path, model_dir: str, manifest: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every sample of the artifact as the processor encodes it, with nothing stored between:
    originals in data set order, then the augmented copies from their recorded seeds."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir)
    size = manifest["image_size"]
    encoder = ChatEncoder(processor, size["min_pixels"], size["max_pixels"], manifest["max_length"])
    dataset = read_dataset(DirectorySource(dataset_dir))
    plan = AugmentationPlan.from_hyperparameters(Hyperparameters().augmentation)
    problems = Problems()
    images = [_decode_images(sample, problems) or [] for sample in dataset.samples]
    samples = [
        encoder.encode(sample, imgs, problems)
        for sample, imgs in zip(dataset.samples, images, strict=True)
    ]
    for record in manifest["token_counts"]["per_sample"]:
        if record["copy"]:
            source = record["source"]
            varied = [augment_image(image, plan, record["seed"]) for image in images[source]]
            samples.append(encoder.encode(dataset.samples[source], varied, problems))
    problems.raise_if_any()
    return [s for s in samples if s is not None]


def test_rebuilt_patches_equal_the_processors_bit_for_bit(
    example_artifact: Path, example_dir: Path, tiny_model_dir: str
) -> None:
    import torch

    manifest, samples = load_artifact(example_artifact)
    direct = _direct_samples(example_dir, tiny_model_dir, manifest)

    assert manifest["format"] == "relaytune.tokenized.v2"
    assert manifest["augmentation"]["augmented_samples"] > 0
    assert len(samples) == len(direct) == manifest["num_samples"]
    for index, (got, want) in enumerate(zip(samples, direct, strict=True)):
        assert sorted(got) == sorted(want), index
        for key in want:
            assert got[key].dtype == want[key].dtype, (index, key)
            assert torch.equal(got[key], want[key]), (index, key)


def test_the_samples_file_holds_8_bit_images_not_fp32_patches(example_artifact: Path) -> None:
    import torch

    manifest = json.loads((example_artifact / MANIFEST_FILE).read_text())
    stored = torch.load(example_artifact / manifest["samples_file"], weights_only=True)
    storage = manifest["pixel_storage"]

    assert all(IMAGES_KEY in s and "pixel_values" not in s for s in stored)
    assert (storage["compact_samples"], storage["fp32_samples"]) == (len(stored), 0)
    assert (example_artifact / IMAGE_PROCESSOR_DIR / "preprocessor_config.json").is_file()
    size = (example_artifact / manifest["samples_file"]).stat().st_size
    assert size * 10 < storage["fp32_patch_bytes"], (size, storage)


def test_patches_that_8_bits_cannot_give_back_stay_fp32(example_artifact: Path) -> None:
    from worker.recipe.pixels import load_image_processor

    _, samples = load_artifact(example_artifact)
    sample = dict(samples[0])
    sample["pixel_values"] = sample["pixel_values"] + 1e-3  # no 8-bit image makes these

    assert compact_sample(sample, load_image_processor(example_artifact)) is sample


def write_v1_copy(artifact_dir: Path, out: Path) -> Path:
    """The artifact as the previous format wrote it: fp32 patches, no image processor."""
    import torch

    manifest, samples = load_artifact(artifact_dir)
    out.mkdir(parents=True)
    torch.save(samples, out / manifest["samples_file"])
    manifest.pop("pixel_storage")
    (out / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": V1}))
    return out


def test_a_v1_artifact_still_loads(example_artifact: Path, tmp_path: Path) -> None:
    import torch

    old = write_v1_copy(example_artifact, tmp_path / "v1")
    manifest, samples = load_artifact(old)
    _, current = load_artifact(example_artifact)

    assert manifest["format"] == V1
    assert not (old / IMAGE_PROCESSOR_DIR).exists()
    assert all(
        torch.equal(a["pixel_values"], b["pixel_values"])
        for a, b in zip(samples, current, strict=True)
    )


def test_an_unknown_artifact_format_is_refused_by_name(
    example_artifact: Path, tmp_path: Path
) -> None:
    from orchestrator.errors import InvalidDataset

    copy = tmp_path / "future"
    shutil.copytree(example_artifact, copy)
    manifest = json.loads((copy / MANIFEST_FILE).read_text())
    (copy / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": "relaytune.tokenized.v9"}))

    with pytest.raises(InvalidDataset, match=re.escape("relaytune.tokenized.v9")):
        load_artifact(copy)


def test_training_from_either_format_gives_the_same_adapter(
    train_artifact_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    old = write_v1_copy(train_artifact_dir, tmp_path / "v1")
    from_v1 = train(old, tiny_model_dir, tmp_path / "from-v1", 0, 1)
    from_v2 = train(train_artifact_dir, tiny_model_dir, tmp_path / "from-v2", 0, 1)

    assert from_v1.last_loss == from_v2.last_loss
    assert_same_adapter(Path(from_v1.checkpoint_dir), Path(from_v2.checkpoint_dir), atol=0)


def test_fp32_patches_on_request_load_the_same(
    example_artifact: Path, example_dir: Path, tiny_model_dir: str, tmp_path: Path
) -> None:
    import torch

    build_artifact(
        example_dir,
        tiny_model_dir,
        tmp_path,
        hyperparameters=Hyperparameters(),
        compact_images=False,
    )
    manifest, samples = load_artifact(tmp_path)
    _, compact = load_artifact(example_artifact)

    assert manifest["pixel_storage"]["encoding"] == "fp32_patches"
    assert all(
        torch.equal(a["pixel_values"], b["pixel_values"])
        for a, b in zip(samples, compact, strict=True)
    )
