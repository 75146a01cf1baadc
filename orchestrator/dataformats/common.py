"""The one shape every data set format is parsed into, and the list of problems found on the way.

No torch here: the API validates uploads with this module and the worker tokenizes its output.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image, UnidentifiedImageError

from orchestrator.errors import InvalidDataset

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
# Qwen's image processor refuses images whose sides differ by more than this factor.
MAX_ASPECT_RATIO = 200
# A response naming a million bad rows helps nobody; the message still gives the full count.
MAX_DETAILS = 1000


# Python object reprs in library messages (PIL's "cannot identify image file <_io.BytesIO
# object at 0x7f…>") say nothing to a user and show the server's heap addresses.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def public_message(text: str) -> str:
    return _OBJECT_REPR.sub("", text)


def load_json(text: str, **options: Any) -> Any:
    """json.loads, with nesting too deep for the parser reported as invalid JSON (a data set
    of 100,000 nested lists would otherwise end the request in a RecursionError)."""
    try:
        return json.loads(text, **options)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None


@dataclass(frozen=True)
class SampleImage:
    name: str  # path inside the data set, or "<row>#image<k>" for an embedded image
    data: bytes


@dataclass(frozen=True)
class ImagePart:
    index: int  # into Sample.images


Part = str | ImagePart


@dataclass(frozen=True)
class Turn:
    role: Role
    parts: tuple[Part, ...]
    train: bool = True  # assistant turns only: OpenAI's `"weight": 0` turns it off

    @property
    def text(self) -> str:
        return "".join(p for p in self.parts if isinstance(p, str))


@dataclass(frozen=True)
class Sample:
    id: str  # names the row in every message: "a.png", "a.png[1]", "data.jsonl:3", "data.json[2]"
    images: tuple[SampleImage, ...]
    turns: tuple[Turn, ...]


@dataclass(frozen=True)
class ParsedDataset:
    format: str
    samples: list[Sample]
    num_images: int  # distinct image files (or embedded images)
    root: str  # folder holding the data file, "" for the archive root, always ending in "/"


@dataclass(frozen=True)
class Problem:
    param: str  # the row or file at fault
    code: str
    message: str
    line: int | None = None  # 1-based, for JSON Lines

    def to_detail(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"param": self.param, "code": self.code, "message": self.message}
        if self.line is not None:
            detail["line"] = self.line
        return detail


@dataclass
class Problems:
    """Every problem of a data set, so that one rejection names all bad rows at once."""

    items: list[Problem] = field(default_factory=list)

    def add(self, param: str, code: str, message: str, *, line: int | None = None) -> None:
        self.items.append(Problem(param, code, public_message(message), line))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        first, count = self.items[0], len(self.items)
        message = (
            first.message
            if count == 1
            else (f"{count} problems in the data set; the first: {first.message}")
        )
        if count > MAX_DETAILS:
            message += f" (details lists the first {MAX_DETAILS})"
        raise InvalidDataset(
            message,
            param=first.param,
            code=first.code,
            details=[p.to_detail() for p in self.items[:MAX_DETAILS]],
        )


def check_image(data: bytes, name: str, problems: Problems, *, max_pixels: int | None) -> bool:
    """Decode the image fully (a truncated file passes a header check); record what is wrong."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if max_pixels is not None and width * height > max_pixels:
                problems.add(
                    name,
                    "image_too_large",
                    f"{name} has {width}x{height} pixels, over the limit of {max_pixels}",
                )
                return False
            # JPEGs decode at 1/8 scale: the whole stream is still read, at a fraction of the cost.
            image.draft(image.mode, (max(1, width // 8), max(1, height // 8)))
            image.load()
    except Image.DecompressionBombError:
        problems.add(name, "image_too_large", f"{name} has too many pixels to decode safely")
        return False
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        problems.add(name, "invalid_image", f"{name} is not a readable image ({exc})")
        return False
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        problems.add(
            name,
            "invalid_image",
            f"{name} is {width}x{height}; sides may differ by at most {MAX_ASPECT_RATIO}x",
        )
        return False
    return True


def check_turns(
    sample_id: str,
    turns: list[Turn],
    num_images: int,
    problems: Problems,
    *,
    line: int | None = None,
) -> None:
    """A conversation the trainer can use: an image, a question, an answer to train on, nothing
    blank. Rows without an image are refused: relaytune tunes a vision model on labelled images,
    and a batch of text-only rows would reach the vision tower with no pixels at all."""

    def bad(code: str, message: str) -> None:
        problems.add(sample_id, code, f"{sample_id}: {message}", line=line)

    if num_images == 0:
        bad("missing_image", "no image")
    if not turns:
        bad("invalid_row", "no messages")
        return
    for index, turn in enumerate(turns):
        if turn.role == "system" and index != 0:
            bad("invalid_row", f"message {index} is a system message; only the first may be")
        elif turn.role == "user" and not turn.text.strip():
            bad("empty_question", f"message {index} (user) has no text")
        elif turn.role == "assistant" and not turn.text.strip():
            bad("empty_answer", f"message {index} (assistant) is empty")
    roles = [t.role for t in turns]
    if "user" not in roles:
        bad("empty_question", "no user message")
    if not any(t.role == "assistant" and t.train for t in turns):
        bad("empty_answer", "no assistant message to train on")
    elif roles[-1] != "assistant":
        bad("invalid_row", "the last message is not the assistant's answer")
