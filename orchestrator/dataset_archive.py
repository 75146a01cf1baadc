"""A data set zip archive: checked before anything is stored, extracted later by preprocess.

The formats themselves (annotations_json, messages, openai_chat) are parsed in
`orchestrator.dataformats`, the same code that the preprocess phase reads them with.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from orchestrator.dataformats import ZipSource, find_data_file, read_dataset
from orchestrator.errors import InvalidDataset
from orchestrator.settings import get_settings
from orchestrator.zip_limits import Inflater, ZipLimits, check_declared_sizes, check_directory_size

# zipfile's ways of saying an archive is damaged (a bad CRC, a truncated stream, a compression
# method it cannot read).
DAMAGED = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError)


@dataclass(frozen=True)
class DatasetSummary:
    format: str
    num_samples: int
    num_images: int
    root: str  # folder inside the zip holding the data file ("" for the archive root)


def _check_paths(archive: zipfile.ZipFile) -> None:
    """Refuse paths that would land outside the extraction folder."""
    for info in archive.infolist():
        path = PurePosixPath(info.filename)
        if path.is_absolute() or ".." in path.parts or "\\" in info.filename:
            raise InvalidDataset(f"unsafe path in zip: {info.filename}", param=info.filename)


@contextmanager
def _open(file: IO[bytes], limits: ZipLimits) -> Iterator[zipfile.ZipFile]:
    """The archive, once its paths and declared sizes pass; damage found later while inflating
    is reported as such."""
    check_directory_size(file, limits)
    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile as exc:
        raise InvalidDataset("the upload is not a zip archive", param="file") from exc
    with archive:
        _check_paths(archive)
        check_declared_sizes(archive, limits)
        try:
            yield archive
        except DAMAGED as exc:
            raise InvalidDataset(f"the zip is damaged: {exc}", param="file") from exc


def validate_dataset_zip(
    data: bytes, *, max_pixels: int, max_images: int, limits: ZipLimits | None = None
) -> DatasetSummary:
    """Raise InvalidDataset naming every bad row, file and field (in `details`); else summarise."""
    limits = limits or ZipLimits()
    with _open(io.BytesIO(data), limits) as archive:
        dataset = read_dataset(
            ZipSource(archive, limits), max_pixels=max_pixels, max_images=max_images
        )
    return DatasetSummary(dataset.format, len(dataset.samples), dataset.num_images, dataset.root)


def extract_dataset(zip_path: Path, dest: Path, limits: ZipLimits | None = None) -> Path:
    """Unpack a validated zip, within the same limits as the upload check (the stored zip is
    checked again: limits may have changed, and the worker trusts nothing it did not count).
    Returns the folder holding the data file (and images)."""
    limits = limits or ZipLimits.from_settings(get_settings())
    with zip_path.open("rb") as file, _open(file, limits) as archive:
        root, _ = find_data_file(ZipSource(archive, limits).names())
        Inflater(archive, limits).extract(dest)
    return dest / root if root else dest
