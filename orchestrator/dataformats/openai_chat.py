"""Format "openai_chat" (OpenAI's vision fine-tuning JSONL): `{"messages": [...]}` whose contents
are strings or lists of `{"type": "text"}` / `{"type": "image_url", "image_url": {"url":
"data:image/...;base64,..."}}` parts. An image is embedded as a data URL or is a file of the
data set named by its path relative to the data file (what a converted .jsonl upload holds);
nothing is downloaded."""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
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
from orchestrator.dataformats.messages import ImageFiles
from orchestrator.dataformats.rows import Row, read_rows, row_messages
from orchestrator.dataformats.sources import FileSource

NAME = "openai_chat"
# "https:", "file:", "C:": anything naming a scheme or a drive is not a path inside the data set.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_file_path(url: Any) -> bool:
    return isinstance(url, str) and bool(url) and not _SCHEME.match(url)


def _image_url(part: dict[str, Any]) -> Any:
    value = part.get("image_url")
    return value.get("url") if isinstance(value, dict) else value


def _decode_image(row: Row, url: Any, name: str, problems: Problems) -> bytes | None:
    if not isinstance(url, str) or not url.startswith("data:"):
        problems.add(
            row.id,
            "unsupported_image_url",
            f"{row.id}: {name} is not a data: URL; images must be embedded as base64 "
            "because nothing is downloaded",
            line=row.line,
        )
        return None
    header, _, payload = url.partition(",")
    try:
        if not header.endswith(";base64"):
            raise ValueError("not base64-encoded")
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        problems.add(
            name, "invalid_image", f"{name}: the data URL does not decode ({exc})", line=row.line
        )
        return None


class _Row:
    """One row's turns and embedded images, decoded part by part."""

    def __init__(
        self, row: Row, files: ImageFiles, max_pixels: int | None, problems: Problems
    ) -> None:
        self.row, self.files, self.max_pixels, self.problems = row, files, max_pixels, problems
        self.images: list[SampleImage] = []
        self.ok = True

    def bad(self, code: str, message: str) -> None:
        self.problems.add(self.row.id, code, f"{self.row.id}: {message}", line=self.row.line)
        self.ok = False

    def parts(self, index: int, content: Any) -> tuple[Part, ...]:
        if isinstance(content, str):
            return (content.strip(),) if content.strip() else ()
        if not isinstance(content, list):
            self.bad("invalid_row", f"message {index} content must be a string or a list of parts")
            return ()
        parts: list[Part] = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                if part["text"].strip():
                    parts.append(part["text"].strip())
            elif kind == "image_url" and is_file_path(_image_url(part)):
                image = self.files.get(self.row, _image_url(part), self.files.file)
                if image is None:
                    self.ok = False
                    image = SampleImage(_image_url(part), b"")  # keeps the numbering
                parts.append(ImagePart(len(self.images)))
                self.images.append(image)
            elif kind == "image_url":
                name = f"{self.row.id}#image{len(self.images)}"
                data = _decode_image(self.row, _image_url(part), name, self.problems)
                if data is None or not check_image(
                    data, name, self.problems, max_pixels=self.max_pixels
                ):
                    self.ok = False
                    data = b""  # keeps the numbering of the row's later images
                parts.append(ImagePart(len(self.images)))
                self.images.append(SampleImage(name, data))
            else:
                self.bad(
                    "invalid_row", f"message {index} has a part that is neither text nor image_url"
                )
        return tuple(parts)

    def turn(self, index: int, message: dict[str, Any]) -> Turn:
        weight = message.get("weight", 1)
        if weight not in (0, 1):
            self.bad("invalid_row", f"message {index} weight must be 0 or 1")
        return Turn(message["role"], self.parts(index, message.get("content")), train=weight != 0)


def parse(
    source: FileSource, root: str, data_file: str, problems: Problems, *, max_pixels: int | None
) -> tuple[list[Sample], int]:
    file = data_file[len(root) :]
    files = ImageFiles(source, root, posixpath.dirname(data_file), file, max_pixels, problems)
    samples = []
    for row in read_rows(source, data_file, file, problems):
        messages = row_messages(row, problems)
        if messages is None:
            continue
        before = len(problems.items)
        parsed = _Row(row, files, max_pixels, problems)
        turns = [parsed.turn(index, message) for index, message in enumerate(messages)]
        check_turns(row.id, turns, len(parsed.images), problems, line=row.line)
        if parsed.ok and len(problems.items) == before:
            samples.append(Sample(row.id, tuple(parsed.images), tuple(turns)))
    # An image file named by several rows counts once, as in the messages format.
    return samples, len({i.name for s in samples for i in s.images})
