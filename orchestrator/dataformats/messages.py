"""Format "messages" (LLaMA-Factory, ms-swift): rows of `{"messages": [{"role", "content"}],
"images": [paths]}`; each `<image>` tag in the contents stands for the next image of the row,
and image paths are relative to the data file."""

from __future__ import annotations

import posixpath
from typing import Any

from orchestrator.dataformats.common import (
    ImagePart,
    Part,
    Problems,
    Sample,
    SampleImage,
    Turn,
    check_image,
    check_turns,
)
from orchestrator.dataformats.rows import Row, read_rows, row_messages
from orchestrator.dataformats.sources import FileSource

NAME = "messages"
IMAGE_TAG = "<image>"


def _parts(content: str, first_image: int) -> tuple[Part, ...]:
    parts: list[Part] = []
    for index, text in enumerate(content.split(IMAGE_TAG)):
        if index:
            parts.append(ImagePart(first_image + index - 1))
        if text.strip():
            parts.append(text.strip())
    return tuple(parts)


def _turns(row: Row, messages: list[Any], problems: Problems) -> tuple[list[Turn], int] | None:
    turns, tags = [], 0
    for index, message in enumerate(messages):
        content = message.get("content")
        if not isinstance(content, str):
            problems.add(
                row.id,
                "invalid_row",
                f"{row.id}: message {index} content must be a string (content parts "
                "belong to the openai_chat format)",
                line=row.line,
            )
            return None
        turns.append(Turn(message["role"], _parts(content, tags)))
        tags += content.count(IMAGE_TAG)
    return turns, tags


def _image_paths(row: Row, problems: Problems) -> list[str] | None:
    value = row.value
    for unsupported in ("videos", "audios"):
        if value.get(unsupported):
            problems.add(
                row.id, "invalid_row", f"{row.id}: {unsupported} are not supported", line=row.line
            )
            return None
    paths = value.get("images", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        problems.add(
            row.id, "invalid_row", f'{row.id}: "images" must be a list of file paths', line=row.line
        )
        return None
    # Windows users write images\a.png; the zip and this parser speak POSIX.
    return [p.replace("\\", "/") for p in paths]


class ImageFiles:
    """Each image file read and checked once, however many rows name it (openai_chat rows may
    name files too)."""

    def __init__(
        self,
        source: FileSource,
        root: str,
        base: str,
        file: str,
        max_pixels: int | None,
        problems: Problems,
    ) -> None:
        self.source, self.root, self.base, self.file = source, root, base, file
        self.members = set(source.names())
        self.max_pixels, self.problems = max_pixels, problems
        self.checked: dict[str, SampleImage | None] = {}

    def get(self, row: Row, path: str, file: str) -> SampleImage | None:
        member = posixpath.normpath(posixpath.join(self.base, path))
        inside = member.startswith(self.root) or not self.root
        if (
            path.startswith("/")
            or ":" in path.split("/")[0]
            or member.startswith("..")
            or not inside
        ):
            self.problems.add(
                row.id,
                "invalid_row",
                f"{row.id}: image path {path} must be "
                f"relative to {file} and stay inside the data set",
                line=row.line,
            )
            return None
        if member not in self.members:
            self.problems.add(
                row.id,
                "missing_image",
                f"{row.id}: image {path} is not in the data set",
                line=row.line,
            )
            return None
        if member not in self.checked:
            name = member[len(self.root) :]
            data = self.source.read(member)
            ok = check_image(data, name, self.problems, max_pixels=self.max_pixels)
            self.checked[member] = SampleImage(name, data) if ok else None
        return self.checked[member]


def parse(
    source: FileSource, root: str, data_file: str, problems: Problems, *, max_pixels: int | None
) -> tuple[list[Sample], int]:
    file = data_file[len(root) :]
    base = posixpath.dirname(data_file)
    images = ImageFiles(source, root, base, file, max_pixels, problems)
    samples = []
    for row in read_rows(source, data_file, file, problems):
        before = len(problems.items)
        messages = row_messages(row, problems)
        paths = _image_paths(row, problems) if messages is not None else None
        parsed = _turns(row, messages, problems) if messages is not None else None
        if parsed is None or paths is None:
            continue
        turns, tags = parsed
        if tags != len(paths):
            problems.add(
                row.id,
                "image_tag_mismatch",
                f"{row.id}: {tags} {IMAGE_TAG} tags but {len(paths)} images",
                line=row.line,
            )
        check_turns(row.id, turns, len(paths), problems, line=row.line)
        found = [images.get(row, path, file) for path in paths]
        if len(problems.items) == before:
            sample_images = tuple(i for i in found if i is not None)
            samples.append(Sample(row.id, sample_images, tuple(turns)))
    num_images = sum(1 for image in images.checked.values() if image is not None)
    return samples, num_images
