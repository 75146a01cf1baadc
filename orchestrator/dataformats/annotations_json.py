"""Format "annotations_json" (the bundled example's): `images/<file>` plus `annotations.json`
mapping a file name to `{"question", "answer"}` or to a list of such pairs; one sample per pair."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from orchestrator.dataformats.common import (
    ImagePart,
    Problems,
    Sample,
    SampleImage,
    Turn,
    check_image,
    load_json,
)
from orchestrator.dataformats.sources import FileSource

NAME = "annotations_json"
ANNOTATIONS = "annotations.json"


def _load(source: FileSource, root: str, problems: Problems) -> dict[str, Any] | None:
    duplicate_keys: list[str] = []

    def keep_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        # json.loads keeps the last of two equal keys without a word; note them instead.
        counts = Counter(key for key, _ in pairs)
        duplicate_keys.extend(key for key, count in counts.items() if count > 1)
        return dict(pairs)

    try:
        data = load_json(
            source.read(root + ANNOTATIONS).decode("utf-8"), object_pairs_hook=keep_duplicates
        )
    except UnicodeDecodeError as exc:
        problems.add(ANNOTATIONS, "invalid_json", f"annotations.json is not UTF-8: {exc}")
        return None
    except json.JSONDecodeError as exc:
        problems.add(
            ANNOTATIONS,
            "invalid_json",
            f"annotations.json is not valid JSON: {exc}",
            line=exc.lineno,
        )
        return None
    if not isinstance(data, dict) or not data:
        problems.add(
            ANNOTATIONS,
            "invalid_dataset",
            "annotations.json must be a non-empty object mapping image file names to "
            '{"question": ..., "answer": ...}',
        )
        return None
    for key in duplicate_keys:
        if key in data:
            problems.add(key, "duplicate_file", f"annotations.json names {key} more than once")
        else:
            problems.add(ANNOTATIONS, "invalid_row", f"a key {key!r} appears twice in one row")
    return data


def _pairs(image_name: str, entry: Any, problems: Problems) -> list[tuple[str, str, str]]:
    """(sample id, question, answer) for each valid pair of one image."""
    pairs = entry if isinstance(entry, list) else [entry]
    if not pairs:
        problems.add(image_name, "empty_question", f"no question/answer pairs for {image_name}")
    found = []
    for index, pair in enumerate(pairs):
        where = image_name if len(pairs) == 1 else f"{image_name}[{index}]"
        if not isinstance(pair, dict):
            problems.add(
                where,
                "invalid_row",
                f"annotation for {where} must be an object with question and answer",
            )
            continue
        ok = True
        for field in ("question", "answer"):
            value = pair.get(field)
            if not isinstance(value, str) or not value.strip():
                problems.add(
                    f"{where}.{field}",
                    f"empty_{field}",
                    f"annotation for {where} has an empty or missing {field}",
                )
                ok = False
        if ok:
            found.append((where, pair["question"].strip(), pair["answer"].strip()))
    return found


def parse(
    source: FileSource, root: str, problems: Problems, *, max_pixels: int | None
) -> tuple[list[Sample], int]:
    annotations = _load(source, root, problems)
    if annotations is None:
        return [], 0
    images = f"{root}images/"
    members = set(source.names())
    samples: list[Sample] = []
    for image_name in sorted(annotations):
        pairs = _pairs(image_name, annotations[image_name], problems)
        member = images + image_name
        if ".." in image_name.split("/") or image_name.startswith("/"):
            problems.add(image_name, "invalid_row", f"{image_name} is not a path inside images/")
            continue
        if member not in members:
            problems.add(
                image_name,
                "missing_image",
                f"annotations.json names {image_name}, which is not in images/",
            )
            continue
        data = source.read(member)
        if not check_image(data, image_name, problems, max_pixels=max_pixels):
            continue
        image = (SampleImage(image_name, data),)
        samples.extend(
            Sample(
                where, image, (Turn("user", (ImagePart(0), question)), Turn("assistant", (answer,)))
            )
            for where, question, answer in pairs
        )
    return samples, len(annotations)
