"""Validation of an uploaded data set zip before anything is stored, and its extraction later.

The formats themselves (annotations_json, messages, openai_chat) are parsed in
`orchestrator.dataformats`, the same code that the preprocess phase reads them with.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from orchestrator.dataformats import ZipSource, find_data_file, read_dataset
from orchestrator.errors import InvalidDataset

MAX_UNCOMPRESSED_BYTES = 2 * 1024**3


@dataclass(frozen=True)
class DatasetSummary:
    format: str
    num_samples: int
    num_images: int
    root: str  # folder inside the zip holding the data file ("" for the archive root)


def _check_members(archive: zipfile.ZipFile) -> None:
    """Refuse paths that would land outside the extraction folder, and zip bombs."""
    total = 0
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise InvalidDataset(f"unsafe path in zip: {info.filename}", param=info.filename)
        total += info.file_size
    if total > MAX_UNCOMPRESSED_BYTES:
        raise InvalidDataset("the zip expands to more than 2 GiB", param="file")


def _open(data: bytes) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise InvalidDataset("the upload is not a zip archive", param="file") from exc


def validate_dataset_zip(data: bytes, *, max_pixels: int, max_images: int) -> DatasetSummary:
    """Raise InvalidDataset naming every bad row, file and field (in `details`); else summarise."""
    with _open(data) as archive:
        _check_members(archive)
        try:
            dataset = read_dataset(ZipSource(archive), max_pixels=max_pixels,
                                   max_images=max_images)
        # zipfile signals a compression method it cannot read with NotImplementedError.
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as exc:
            raise InvalidDataset(f"the zip is damaged: {exc}", param="file") from exc
    return DatasetSummary(dataset.format, len(dataset.samples), dataset.num_images, dataset.root)


def extract_dataset(zip_path: Path, dest: Path) -> Path:
    """Unpack a validated zip; returns the folder holding the data file (and images)."""
    with zipfile.ZipFile(zip_path) as archive:
        _check_members(archive)
        root, _ = find_data_file(ZipSource(archive).names())
        archive.extractall(dest)
    return dest / root if root else dest
