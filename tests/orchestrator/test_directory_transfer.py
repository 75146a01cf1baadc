"""Directories move several files at a time, and a checkpoint's manifest is still stored only
after every file it lists, never when one of them failed."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from orchestrator.storage import LocalStore, download_dir, publish_dir


class RecordingStore(LocalStore):
    """A local store that records the keys it stored, in order, and can fail one key."""

    def __init__(self, root: Path, fail_key: str | None = None) -> None:
        super().__init__(root)
        self.stored: list[str] = []
        self.fail_key = fail_key
        # The first two uploads wait for each other: one at a time, they never meet.
        self.overlap = threading.Barrier(2, timeout=10)
        self.calls = 0
        self._lock = threading.Lock()

    def put_file(self, key: str, path: Path) -> None:
        with self._lock:
            self.calls += 1
            first_two = self.calls <= 2
        if first_two:
            self.overlap.wait()
        if key == self.fail_key:
            raise OSError(f"refused {key}")
        super().put_file(key, path)
        with self._lock:
            self.stored.append(key)


def _checkpoint(folder: Path, files: int) -> Path:
    (folder / "sub").mkdir(parents=True)
    for index in range(files):
        (folder / ("sub" if index % 2 else "") / f"f{index}.bin").write_bytes(b"x" * (index + 1))
    (folder / "manifest.json").write_text("{}")
    return folder


def test_the_manifest_is_stored_last_after_files_stored_in_parallel(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "ckpt", files=20)
    store = RecordingStore(tmp_path / "store")
    written = publish_dir(store, folder, "jobs/j/ckpt")
    assert len(store.stored) == 21 and store.stored[-1] == "jobs/j/ckpt/manifest.json"
    assert written == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    back = download_dir(store, "jobs/j/ckpt", tmp_path / "back")
    assert len(back) == 21
    for path in folder.rglob("*"):
        if path.is_file():
            assert (tmp_path / "back" / path.relative_to(folder)).read_bytes() == path.read_bytes()


def test_no_manifest_is_stored_when_one_file_fails(tmp_path: Path) -> None:
    folder = _checkpoint(tmp_path / "ckpt", files=20)
    store = RecordingStore(tmp_path / "store", fail_key="jobs/j/ckpt/sub/f7.bin")
    with pytest.raises(OSError, match=r"f7\.bin"):
        publish_dir(store, folder, "jobs/j/ckpt")
    assert "jobs/j/ckpt/manifest.json" not in store.stored
    assert len(store.stored) == 19  # every other file was still finished, none left running
