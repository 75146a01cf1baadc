"""Find the data file, tell the format, parse every row, and reject with the full list of problems.

Detection: `annotations.json` means annotations_json; otherwise the one `.json`/`.jsonl` file is
read, and rows whose message contents are lists of parts mean openai_chat, rows with string
contents (or an "images" list) mean messages. The data file sits at the archive root or inside
one top-level folder (what zipping a folder produces).
"""

from __future__ import annotations

from typing import Any

from orchestrator.dataformats import annotations_json, messages, openai_chat
from orchestrator.dataformats.common import ParsedDataset, Problems
from orchestrator.dataformats.rows import read_rows
from orchestrator.dataformats.sources import FileSource
from orchestrator.errors import InvalidDataset

FORMATS = (annotations_json.NAME, messages.NAME, openai_chat.NAME)
# LLaMA-Factory's registry of data sets sits next to the data file but holds no rows.
NOT_DATA = frozenset({"dataset_info.json"})
# Files counted against the image limit from the archive's listing alone.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _is_data_file(name: str) -> bool:
    return name.endswith((".json", ".jsonl")) and name not in NOT_DATA


def find_data_file(names: list[str]) -> tuple[str, str]:
    """(root folder ending in "/" or "", the data file's full name)."""
    if any("/" not in n and _is_data_file(n) for n in names):
        root = ""
    else:
        folders = sorted(
            {n.split("/")[0] for n in names if n.count("/") == 1 and _is_data_file(n.split("/")[1])}
        )
        if not folders:
            raise InvalidDataset(
                "the zip holds no annotations.json and no .json/.jsonl data file at its root "
                "(or inside one top-level folder)",
                param="file",
                code="missing_annotations",
            )
        if len(folders) > 1:
            raise InvalidDataset(
                f"data files in several folders ({', '.join(folders)}); zip one data set",
                param="file",
            )
        root = folders[0] + "/"
    candidates = sorted(
        n
        for n in names
        if n.startswith(root) and "/" not in n[len(root) :] and _is_data_file(n[len(root) :])
    )
    if root + annotations_json.ANNOTATIONS in candidates:
        return root, root + annotations_json.ANNOTATIONS
    if len(candidates) > 1:
        shown = ", ".join(c[len(root) :] for c in candidates)
        raise InvalidDataset(
            f"several data files ({shown}); the data set must have exactly one",
            param=candidates[1][len(root) :],
        )
    return root, candidates[0]


def _row_format(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    if "images" in value:
        return messages.NAME
    turns = value.get("messages")
    if not isinstance(turns, list) or not turns:
        return None
    if any(isinstance(t, dict) and isinstance(t.get("content"), list) for t in turns):
        return openai_chat.NAME
    return messages.NAME


def detect_format(source: FileSource, root: str, data_file: str) -> str:
    if data_file == root + annotations_json.ANNOTATIONS:
        return annotations_json.NAME
    # A throwaway problem list: the parser proper reports the same rows again.
    for row in read_rows(source, data_file, data_file[len(root) :], Problems()):
        found = _row_format(row.value)
        if found:
            return found
    return messages.NAME


def _case_clashes(names: list[str], root: str, problems: Problems) -> None:
    """a.PNG and a.png are one file on macOS and Windows: extracting there would keep one."""
    by_folded: dict[str, list[str]] = {}
    for name in names:
        if name.startswith(root):
            by_folded.setdefault(name.casefold(), []).append(name[len(root) :])
    for clash in by_folded.values():
        if len(clash) > 1:
            problems.add(
                sorted(clash)[0],
                "duplicate_file",
                f"{' and '.join(sorted(clash))} differ only in case",
            )


def read_dataset(
    source: FileSource, *, max_pixels: int | None = None, max_images: int | None = None
) -> ParsedDataset:
    """Parse and check the whole data set; raise one InvalidDataset listing every bad row."""
    names = source.names()
    root, data_file = find_data_file(names)
    problems = Problems()
    for name in source.duplicates():
        problems.add(name[len(root) :], "duplicate_file", f"the zip holds {name} more than once")
    _case_clashes(names, root, problems)
    file = data_file[len(root) :]
    image_files = sum(1 for n in names if n.lower().endswith(IMAGE_SUFFIXES))
    if max_images is not None and image_files > max_images:
        # Refused on the archive's listing, before any image is read and decoded.
        problems.add(
            file,
            "too_many_images",
            f"{image_files} images in the data set; the limit is {max_images}",
        )
        problems.raise_if_any()
    fmt = detect_format(source, root, data_file)
    if fmt == annotations_json.NAME:
        samples, num_images = annotations_json.parse(source, root, problems, max_pixels=max_pixels)
    elif fmt == openai_chat.NAME:
        samples, num_images = openai_chat.parse(
            source, root, data_file, problems, max_pixels=max_pixels
        )
    else:
        samples, num_images = messages.parse(
            source, root, data_file, problems, max_pixels=max_pixels
        )
    if max_images is not None and num_images > max_images:
        problems.add(
            file,
            "too_many_images",
            f"{num_images} images in the data set; the limit is {max_images}",
        )
    if not samples and not problems:
        problems.add(file, "invalid_dataset", f"{file} holds no samples")
    problems.raise_if_any()
    return ParsedDataset(fmt, samples, num_images, root)
