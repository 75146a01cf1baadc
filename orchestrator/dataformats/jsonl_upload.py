"""A raw OpenAI chat `.jsonl` upload, turned into the zip relaytune stores for it.

Each image embedded as a base64 PNG or JPEG data URL is written out as a file under `images/`,
named after its line (`images/line3-image0.png`), and its `url` becomes that file's path; the
rows keep their lines, so every problem the parser finds later names the upload's own line. A
line that does not parse, or an image that does not decode, is left as it is for the parser to
report. The zip is then checked like any uploaded zip, within the same limits.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import posixpath
import zipfile
from typing import Any

from orchestrator.dataformats.common import load_json
from orchestrator.errors import InvalidDataset
from orchestrator.zip_limits import TOO_LARGE, ZipLimits

ZIP_MAGIC = b"PK"
EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/jpg": "jpg"}
DEFAULT_NAME = "data.jsonl"


def is_jsonl_upload(filename: str, data: bytes) -> bool:
    """A zip is told by its signature; anything else named .jsonl is a JSONL upload."""
    return not data.startswith(ZIP_MAGIC) and filename.lower().endswith(".jsonl")


def member_name(filename: str) -> str:
    """The upload's own base name, so messages say `train.jsonl:3`; never a path."""
    base = posixpath.basename(filename.replace("\\", "/"))
    if not base.lower().endswith(".jsonl") or base.startswith("."):
        return DEFAULT_NAME
    return base[: -len(".jsonl")] + ".jsonl"  # the parser knows a .jsonl by its lower-case name


def _decoded(url: Any) -> tuple[str, bytes] | None:
    """(extension, bytes) of a base64 PNG/JPEG data URL; None for anything else."""
    if not isinstance(url, str) or not url.startswith("data:"):
        return None
    header, _, payload = url.partition(",")
    mime, _, encoding = header[len("data:") :].partition(";")
    if encoding != "base64" or mime.lower() not in EXTENSIONS:
        return None
    try:
        return EXTENSIONS[mime.lower()], base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


class _Converter:
    def __init__(self, limits: ZipLimits) -> None:
        self.limits = limits
        self.images: dict[str, bytes] = {}
        self.in_line = 0  # images of the current line so far

    def line(self, number: int, text: str) -> str:
        self.in_line = 0
        try:
            row = load_json(text)
        except json.JSONDecodeError:
            return text
        messages = row.get("messages") if isinstance(row, dict) else None
        if not isinstance(messages, list):
            return text
        changed = False
        for message in messages:
            content = message.get("content") if isinstance(message, dict) else None
            for part in content if isinstance(content, list) else []:
                changed |= self._part(number, part)
        return json.dumps(row, ensure_ascii=False) if changed else text

    def _part(self, number: int, part: Any) -> bool:
        if not isinstance(part, dict) or part.get("type") != "image_url":
            return False
        holder = part.get("image_url")
        decoded = _decoded(holder.get("url") if isinstance(holder, dict) else holder)
        if decoded is None:
            return False
        extension, data = decoded
        path = f"images/line{number}-image{self.in_line}.{extension}"
        self.in_line += 1
        if len(self.images) >= self.limits.max_members:
            raise InvalidDataset(
                f"line {number}: the data set holds more than {self.limits.max_members} images, "
                "the limit for a data set",
                param=f"line {number}",
                code=TOO_LARGE,
            )
        self.images[path] = data
        if isinstance(holder, dict):
            holder["url"] = path
        else:
            part["image_url"] = {"url": path}
        return True


def jsonl_to_zip(filename: str, data: bytes, limits: ZipLimits) -> bytes:
    """The zip equivalent of a `.jsonl` upload (see the module's docstring)."""
    name = member_name(filename)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = None  # stored as sent: the parser names the encoding error
    converter = _Converter(limits)
    if text is not None:
        lines = [converter.line(n, line) for n, line in enumerate(text.splitlines(), start=1)]
        data = "\n".join(lines).encode()
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(name, data, compress_type=zipfile.ZIP_DEFLATED)
        # PNG and JPEG are compressed already.
        for path, image in converter.images.items():
            archive.writestr(path, image, compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()
