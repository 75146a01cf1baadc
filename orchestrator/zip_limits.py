"""Bounds on what an uploaded zip may expand to, enforced on the bytes actually inflated.

A zip's headers are the sender's word: a 1 MB archive can declare a small member and inflate to
gigabytes, or hold a gigabyte of JSON whitespace. So every limit is checked twice: on the sizes
the archive declares (a cheap refusal before anything is inflated) and on the bytes counted while
inflating, which stop at the limit. The API's validation and the worker's extraction share them.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from orchestrator.errors import InvalidDataset
from orchestrator.settings import Settings

CHUNK = 1024 * 1024
TOO_LARGE = "dataset_too_large"
# The central directory is parsed into memory whole; an entry whose record is over this size
# on average is no data set's (a name and a few extra fields fit in a few hundred bytes).
DIRECTORY_BYTES_PER_MEMBER = 1024
_END = struct.Struct("<4s4H2LH")
_END_SIGNATURE, _ZIP64_END_SIGNATURE = b"PK\x05\x06", b"PK\x06\x06"
_LONGEST_TAIL = _END.size + 0xFFFF + 20 + 56  # end record, comment, zip64 locator and record


def is_data_file(name: str) -> bool:
    return name.endswith((".json", ".jsonl"))


@dataclass(frozen=True)
class ZipLimits:
    max_members: int = 10_000
    max_member_bytes: int = 64 * 1024**2  # an image (or any other file) once inflated
    max_data_file_bytes: int = 64 * 1024**2  # the .json/.jsonl data file once inflated
    max_total_bytes: int = 512 * 1024**2  # the whole data set once inflated

    @classmethod
    def from_settings(cls, settings: Settings) -> ZipLimits:
        return cls(
            settings.max_dataset_members,
            settings.max_dataset_member_bytes,
            settings.max_data_file_bytes,
            settings.max_dataset_bytes,
        )

    def member_cap(self, name: str) -> int:
        return self.max_data_file_bytes if is_data_file(name) else self.max_member_bytes


def _member_too_large(name: str, cap: int, size: int | None = None) -> InvalidDataset:
    found = f"{size} bytes" if size is not None else "more"
    return InvalidDataset(
        f"{name} expands to {found}; a file of the data set may hold at most {cap} bytes",
        param=name,
        code=TOO_LARGE,
    )


def _total_too_large(cap: int) -> InvalidDataset:
    return InvalidDataset(
        f"the zip expands to more than {cap} bytes, the limit for a data set",
        param="file",
        code=TOO_LARGE,
    )


def check_directory_size(file: IO[bytes], limits: ZipLimits) -> None:
    """Refuse an archive whose end record declares more members (or a larger central directory)
    than allowed, before zipfile parses that directory into memory. A file that is no zip is
    left for zipfile to report."""
    file.seek(0, 2)
    size = file.tell()
    file.seek(max(0, size - _LONGEST_TAIL))
    tail = file.read()
    file.seek(0)
    at = tail.rfind(_END_SIGNATURE)
    if at < 0 or at + _END.size > len(tail):
        return
    _, _, _, _, members, directory_bytes, _, _ = _END.unpack_from(tail, at)
    zip64 = tail.rfind(_ZIP64_END_SIGNATURE, 0, at)
    if zip64 >= 0 and zip64 + 48 <= len(tail):
        members, directory_bytes = struct.unpack_from("<QQ", tail, zip64 + 32)
    if (
        members > limits.max_members
        or directory_bytes > limits.max_members * DIRECTORY_BYTES_PER_MEMBER
    ):
        raise InvalidDataset(
            f"the zip holds {members} files; a data set may hold at most {limits.max_members}",
            param="file",
            code=TOO_LARGE,
        )


def check_declared_sizes(archive: zipfile.ZipFile, limits: ZipLimits) -> None:
    """The sizes the archive declares: refused here, nothing needs inflating."""
    members = archive.infolist()
    if len(members) > limits.max_members:
        raise InvalidDataset(
            f"the zip holds {len(members)} files; a data set may hold at most {limits.max_members}",
            param="file",
            code=TOO_LARGE,
        )
    total = 0
    for info in members:
        cap = limits.member_cap(info.filename)
        if info.file_size > cap:
            raise _member_too_large(info.filename, cap, info.file_size)
        total += info.file_size
    if total > limits.max_total_bytes:
        raise _total_too_large(limits.max_total_bytes)


class _Writable(Protocol):
    def write(self, chunk: bytes, /) -> int: ...


class Inflater:
    """Inflates members, counting the bytes really produced against each limit."""

    def __init__(self, archive: zipfile.ZipFile, limits: ZipLimits) -> None:
        self.archive, self.limits = archive, limits
        self._sizes: dict[str, int] = {}  # bytes inflated per member; a re-read counts once

    def _cap(self, name: str) -> tuple[int, bool]:
        """(bytes this member may inflate to, whether the total is what binds)."""
        others = sum(size for member, size in self._sizes.items() if member != name)
        room = self.limits.max_total_bytes - others
        cap = self.limits.member_cap(name)
        return min(cap, room), room < cap

    def copy(self, name: str, out: _Writable) -> int:
        """Inflate `name` into `out`, stopping at the first byte past its limit."""
        cap, total_binds = self._cap(name)
        written = 0
        with self.archive.open(name) as member:
            while chunk := member.read(min(CHUNK, cap + 1 - written)):
                written += len(chunk)
                if written > cap:
                    raise (
                        _total_too_large(self.limits.max_total_bytes)
                        if total_binds
                        else _member_too_large(name, cap)
                    )
                out.write(chunk)
        self._sizes[name] = written
        return written

    def read(self, name: str) -> bytes:
        buffer = _Buffer()
        self.copy(name, buffer)
        return buffer.value()

    def extract(self, dest: Path) -> None:
        """Unpack every member below `dest` (paths already checked to stay inside it)."""
        for info in self.archive.infolist():
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                self.copy(info.filename, out)


class _Buffer:
    """Collects chunks without the doubling copies of a growing BytesIO."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, chunk: bytes) -> int:
        self._parts.append(chunk)
        return len(chunk)

    def value(self) -> bytes:
        return b"".join(self._parts)
