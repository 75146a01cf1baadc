"""Validation of an uploaded data set zip, before anything is stored.

Format "annotations_json" (the seed's): `images/<file>` plus `annotations.json` mapping a file
name to `{"question", "answer"}` or to a list of such pairs. The archive may wrap both in one
top-level folder (what zipping a folder produces).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from PIL import Image, UnidentifiedImageError

from orchestrator.errors import InvalidDataset

ANNOTATIONS = "annotations.json"
MAX_UNCOMPRESSED_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class DatasetSummary:
    format: str
    num_samples: int
    num_images: int
    root: str  # folder inside the zip holding annotations.json ("" for the archive root)


def _find_root(names: list[str]) -> str:
    candidates = sorted(
        n[: -len(ANNOTATIONS)]
        for n in names
        if n == ANNOTATIONS or (n.endswith("/" + ANNOTATIONS) and n.count("/") == 1)
    )
    if not candidates:
        raise InvalidDataset(
            "the zip holds no annotations.json at its root (or inside one top-level folder)",
            param="file",
            code="missing_annotations",
        )
    return candidates[0]


def _check_members(archive: zipfile.ZipFile) -> None:
    total = 0
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts:
            raise InvalidDataset(f"unsafe path in zip: {info.filename}", param=info.filename)
        total += info.file_size
    if total > MAX_UNCOMPRESSED_BYTES:
        raise InvalidDataset("the zip expands to more than 2 GiB", param="file")


def _load_annotations(archive: zipfile.ZipFile, key: str) -> dict[str, Any]:
    try:
        data = json.loads(archive.read(key).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidDataset(
            f"annotations.json is not valid JSON: {exc}", param=ANNOTATIONS, code="invalid_json"
        ) from exc
    if not isinstance(data, dict) or not data:
        raise InvalidDataset(
            "annotations.json must be a non-empty object mapping image file names to "
            '{"question": ..., "answer": ...}',
            param=ANNOTATIONS,
        )
    return data


def _check_pairs(image_name: str, entry: Any) -> int:
    pairs = entry if isinstance(entry, list) else [entry]
    if not pairs:
        raise InvalidDataset(f"no question/answer pairs for {image_name}", param=image_name)
    for index, pair in enumerate(pairs):
        where = image_name if len(pairs) == 1 else f"{image_name}[{index}]"
        if not isinstance(pair, dict):
            raise InvalidDataset(
                f"annotation for {where} must be an object with question and answer", param=where
            )
        for field in ("question", "answer"):
            value = pair.get(field)
            if not isinstance(value, str) or not value.strip():
                raise InvalidDataset(
                    f"annotation for {where} has an empty or missing {field}",
                    param=f"{where}.{field}",
                    code=f"empty_{field}",
                )
    return len(pairs)


def _check_image(data: bytes, name: str, max_pixels: int) -> None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise InvalidDataset(
            f"{name} is not a readable image", param=name, code="invalid_image"
        ) from exc
    if width * height > max_pixels:
        raise InvalidDataset(
            f"{name} has {width}x{height} pixels, over the limit of {max_pixels}",
            param=name,
            code="image_too_large",
        )


def validate_dataset_zip(data: bytes, *, max_pixels: int, max_images: int) -> DatasetSummary:
    """Raise InvalidDataset naming the file, row and field at fault; else summarise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidDataset("the upload is not a zip archive", param="file") from exc
    with archive:
        _check_members(archive)
        names = [n for n in archive.namelist() if not n.endswith("/")]
        root = _find_root(names)
        annotations = _load_annotations(archive, root + ANNOTATIONS)
        if len(annotations) > max_images:
            raise InvalidDataset(
                f"{len(annotations)} images annotated; the limit is {max_images}", param=ANNOTATIONS
            )
        members = set(names)
        num_samples = 0
        for image_name, entry in annotations.items():
            member = f"{root}images/{image_name}"
            if member not in members:
                raise InvalidDataset(
                    f"annotations.json names {image_name}, which is not in images/",
                    param=image_name,
                    code="missing_image",
                )
            num_samples += _check_pairs(image_name, entry)
            _check_image(archive.read(member), image_name, max_pixels)
    return DatasetSummary("annotations_json", num_samples, len(annotations), root)


def extract_dataset(zip_path: Path, dest: Path) -> Path:
    """Unpack a validated zip; returns the folder holding images/ and annotations.json."""
    with zipfile.ZipFile(zip_path) as archive:
        root = _find_root([n for n in archive.namelist() if not n.endswith("/")])
        _check_members(archive)
        archive.extractall(dest)
    return dest / root if root else dest
