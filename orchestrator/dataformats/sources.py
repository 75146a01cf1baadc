"""Where a data set's files come from: the uploaded zip (API) or its extracted folder (worker).

Both give the same view, so one parser serves the upload check and the preprocess phase.
"""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Protocol

from orchestrator.zip_limits import Inflater, ZipLimits


def is_junk(name: str) -> bool:
    """Files that archivers add on their own (macOS resource forks, .DS_Store): never data."""
    return any(part == "__MACOSX" or part.startswith(".") for part in PurePosixPath(name).parts)


class FileSource(Protocol):
    def names(self) -> list[str]:
        """Every regular file as a relative POSIX path, each once, junk left out."""
        ...

    def duplicates(self) -> list[str]:
        """Names that occur more than once (a zip may hold two entries of the same name)."""
        ...

    def read(self, name: str) -> bytes: ...


class ZipSource:
    """Reads members through an Inflater: a member is never inflated past its limit."""

    def __init__(self, archive: zipfile.ZipFile, limits: ZipLimits | None = None) -> None:
        self._inflater = Inflater(archive, limits or ZipLimits())
        raw = [n for n in archive.namelist() if not n.endswith("/") and not is_junk(n)]
        counts = Counter(raw)
        self._names = list(counts)
        self._duplicates = sorted(n for n, c in counts.items() if c > 1)

    def names(self) -> list[str]:
        return self._names

    def duplicates(self) -> list[str]:
        return self._duplicates

    def read(self, name: str) -> bytes:
        return self._inflater.read(name)


class DirectorySource:
    def __init__(self, root: Path) -> None:
        self._root = Path(root)
        self._names = sorted(
            p.relative_to(self._root).as_posix() for p in self._root.rglob("*") if p.is_file()
        )
        self._names = [n for n in self._names if not is_junk(n)]

    def names(self) -> list[str]:
        return self._names

    def duplicates(self) -> list[str]:
        return []

    def read(self, name: str) -> bytes:
        return (self._root / name).read_bytes()
