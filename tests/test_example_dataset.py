"""The committed example data set is what scripts/make_example_dataset.py draws."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
DATASET = REPO_ROOT / "examples" / "circuit-boards"
SCRIPT = REPO_ROOT / "scripts" / "make_example_dataset.py"
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
PARTS = ("capacitor", "resistor", "chip")
MAX_DATASET_BYTES = 200 * 1024


def _annotations(folder: Path) -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads((folder / "annotations.json").read_text())
    return loaded


def _pixels(path: Path) -> tuple[str, tuple[int, int], bytes]:
    with Image.open(path) as image:
        return image.mode, image.size, image.tobytes()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("circuit-boards")
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], check=True, timeout=120)
    return out


def test_regenerating_gives_the_committed_annotations(regenerated: Path) -> None:
    assert (regenerated / "annotations.json").read_bytes() == (
        DATASET / "annotations.json"
    ).read_bytes()


def test_regenerating_gives_the_committed_images(regenerated: Path) -> None:
    committed = sorted(p.name for p in (DATASET / "images").iterdir())
    assert sorted(p.name for p in (regenerated / "images").iterdir()) == committed
    for name in committed:
        # Pixels, not file bytes: another zlib may compress the same picture differently.
        assert _pixels(regenerated / "images" / name) == _pixels(DATASET / "images" / name), name


def test_each_annotation_names_an_existing_image() -> None:
    annotations = _annotations(DATASET)
    images = {p.name for p in (DATASET / "images").iterdir()}
    assert len(annotations) >= 10, "the guide asks for at least 10 samples"
    assert set(annotations) == images
    for name in annotations:
        assert re.fullmatch(r"case\d+\.png", name), name
        with Image.open(DATASET / "images" / name) as image:
            image.verify()


def test_each_answer_names_a_part_and_a_position() -> None:
    for name, sample in _annotations(DATASET).items():
        assert sample["question"] == "Which part is abnormal?"
        part, _, position = sample["answer"].rpartition(", ")
        assert position in POSITIONS, (name, sample["answer"])
        assert any(part.endswith(kind) for kind in PARTS), (name, sample["answer"])


def test_the_data_set_is_small_enough_to_commit() -> None:
    size = sum(p.stat().st_size for p in DATASET.rglob("*") if p.is_file())
    assert size < MAX_DATASET_BYTES
