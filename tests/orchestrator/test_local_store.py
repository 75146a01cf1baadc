"""The standalone stack's directory store: listing reads only the part of the tree asked for."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.storage import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    store = LocalStore(tmp_path / "objects")
    for key in (
        "jobs/a/run-1/ckpt/adapter.safetensors",
        "jobs/a/run-1/ckpt/manifest.json",
        "jobs/a/run-10/ckpt/manifest.json",
        "jobs/b/run-1/ckpt/manifest.json",
        "datasets/x/data.zip",
        "models/sha256/d1/config.json",
    ):
        store.put_bytes(key, b"x")
    return store


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", 6),
        ("jobs/", 4),
        ("jobs/a/", 3),
        ("jobs/a/run-1", 3),  # a prefix, not a folder: run-10 matches too, as on S3
        ("jobs/a/run-1/", 2),
        ("jobs/a/run-1/ckpt/manifest.json", 1),
        ("jobs/c/", 0),
        ("nothing-here/deeper/", 0),
    ],
)
def test_list_matches_key_prefixes_like_s3(store: LocalStore, prefix: str, expected: int) -> None:
    keys = store.list(prefix)
    assert len(keys) == expected
    assert all(k.startswith(prefix) for k in keys)
    assert keys == sorted(keys)


def test_list_skips_partial_uploads(store: LocalStore) -> None:
    (store.root / "jobs/a/run-1/ckpt/big.bin.partial").write_bytes(b"half")
    assert "jobs/a/run-1/ckpt/big.bin.partial" not in store.list("jobs/a/")


def test_list_reads_only_the_folder_that_holds_the_prefix(
    store: LocalStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's listing must not walk every other job's and model's files (a 16-epoch phase
    lists its prefix a dozen times)."""
    scanned: list[Path] = []
    real_scandir = os.scandir

    def recording_scandir(path: str | os.PathLike[str] = ".") -> object:
        scanned.append(Path(path).resolve())
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    assert len(store.list("jobs/a/run-1/")) == 2
    folder = (store.root / "jobs/a/run-1").resolve()
    assert scanned, "the listing read no folder at all"
    outside = [p for p in scanned if not p.is_relative_to(folder)]
    assert outside == []


def test_list_refuses_to_leave_the_store(store: LocalStore, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("not an object")
    assert store.list("../") == []
