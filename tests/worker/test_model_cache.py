"""A registered model on a worker's disk: fetched once, verified, shared, size-capped."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator import storage
from orchestrator.db import session_scope
from orchestrator.layout import model_file_key
from orchestrator.model_files import is_weights
from orchestrator.model_registry import add_model, file_sha256
from orchestrator.settings import get_settings
from worker.model_cache import (
    PARTIAL_READY,
    READY,
    ModelCorrupt,
    cache_root,
    materialise,
    resolve_local_model,
)


class CountingStore:
    """The test store, counting what is read through it."""

    def __init__(self) -> None:
        self.inner = storage.get_store()
        self.gets: list[str] = []
        self.lock = threading.Lock()

    def get_file(self, key: str, path: Path) -> None:
        with self.lock:
            self.gets.append(key)
        self.inner.get_file(key, path)


def _weights(keys: list[str]) -> list[str]:
    return [key for key in keys if is_weights(key)]


def _assert_verified(entry: Path, files: list[dict[str, Any]]) -> None:
    """Every file the entry holds is a recorded file with its recorded hash."""
    recorded = {str(f["path"]): f["sha256"] for f in files}
    held = [p for p in entry.rglob("*") if p.is_file() and not p.name.startswith(".relaytune")]
    for path in held:
        assert file_sha256(path) == recorded[path.relative_to(entry).as_posix()]


Registered = tuple[str, list[dict[str, Any]]]  # a model's digest and files


def register(name: str, directory: str) -> Registered:
    """The model in `directory` registered as `name`."""
    with session_scope() as session:
        model, _ = add_model(session, storage.get_store(), name, Path(directory))
        return model.digest, list(model.files)


def _two_models(tiny_model_dir: str, tmp_path: Path) -> tuple[Registered, Registered]:
    """The tiny model as "a", and a copy of it with one file changed (another digest) as "b"."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    (copy / "generation_config.json").write_text("{}")
    return register("a", tiny_model_dir), register("b", str(copy))


def _all_at_once(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_a_registered_model_is_fetched_once_then_served_from_the_cache(
    clean_db: None, tiny_model_dir: str
) -> None:
    digest, files = register("team/tiny", tiny_model_dir)
    settings = get_settings()
    model = resolve_local_model("team/tiny", settings)
    local = Path(model.location)
    assert local == cache_root(settings) / digest
    for file in files:
        assert (local / str(file["path"])).read_bytes() == (
            Path(tiny_model_dir) / str(file["path"])
        ).read_bytes()
    store = CountingStore()
    again, hit = materialise(store, digest, files, cache_root(settings), 1 << 40)
    assert (again, hit, store.gets) == (local, True, [])
    # a name that is not registered resolves as before
    assert resolve_local_model("tiny-qwen3-vl", settings).location == tiny_model_dir


def test_processes_wanting_one_model_fetch_it_once(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    digest, files = register("team/tiny", tiny_model_dir)
    store = CountingStore()
    results: list[tuple[Path, bool]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(materialise(store, digest, files, tmp_path, 1 << 40))
        )
        for _ in range(3)
    ]
    _all_at_once(threads)
    assert sorted(hit for _, hit in results) == [False, True, True]
    assert len(store.gets) == len(files)


def test_a_stored_file_that_does_not_match_its_hash_is_refused(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    digest, files = register("team/tiny", tiny_model_dir)
    first = str(files[0]["path"])
    storage.get_store().put_bytes(model_file_key(digest, first), b"not the weights")
    with pytest.raises(ModelCorrupt) as refused:
        materialise(storage.get_store(), digest, files, tmp_path, 1 << 40)
    assert first in refused.value.message
    assert not (tmp_path / digest / READY).exists()


def test_the_least_recently_used_model_goes_when_the_cache_is_full(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    (a, files_a), (b, files_b) = _two_models(tiny_model_dir, tmp_path)
    cache = tmp_path / "cache"
    store = storage.get_store()
    materialise(store, a, files_a, cache, 1 << 40)
    # room for one model only: fetching b evicts a, never b itself
    _, hit = materialise(store, b, files_b, cache, 1)
    assert hit is False
    assert not (cache / a).exists() and (cache / b / READY).is_file()


def test_preprocessing_fetches_no_weights_and_training_later_fetches_only_them(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    digest, files = register("team/tiny", tiny_model_dir)
    weights = sorted(
        model_file_key(digest, str(f["path"])) for f in files if is_weights(str(f["path"]))
    )
    assert weights  # the tiny model has safetensors weights
    store = CountingStore()
    entry, hit = materialise(store, digest, files, tmp_path, 1 << 40, weights=False)
    assert hit is False and _weights(store.gets) == []
    assert (entry / PARTIAL_READY).is_file() and not (entry / READY).exists()
    assert (entry / "config.json").is_file() and (entry / "tokenizer.json").is_file()
    _assert_verified(entry, files)
    # another preprocessing run on the node: a hit
    assert materialise(store, digest, files, tmp_path, 1 << 40, weights=False)[1] is True

    before = len(store.gets)
    again, hit = materialise(store, digest, files, tmp_path, 1 << 40)
    fetched = store.gets[before:]
    assert (again, hit) == (entry, False)
    assert sorted(fetched) == weights
    assert (entry / READY).is_file() and not (entry / PARTIAL_READY).exists()
    _assert_verified(entry, files)
    assert {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()} >= {
        str(f["path"]) for f in files
    }
    # a complete entry serves preprocessing too
    assert materialise(store, digest, files, tmp_path, 1 << 40, weights=False)[1] is True


def test_processes_wanting_the_configs_and_the_weights_at_once_leave_one_complete_entry(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    digest, files = register("team/tiny", tiny_model_dir)
    store = CountingStore()
    threads = [
        threading.Thread(
            target=materialise,
            args=(store, digest, files, tmp_path, 1 << 40),
            kwargs={"weights": weights},
        )
        for weights in (False, True, False, True)
    ]
    _all_at_once(threads)
    # each file fetched once
    assert sorted(store.gets) == sorted(model_file_key(digest, str(f["path"])) for f in files)
    assert (tmp_path / digest / READY).is_file()
    _assert_verified(tmp_path / digest, files)


def test_a_partial_entry_is_evicted_by_the_bytes_it_holds(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    (a, files_a), (b, files_b) = _two_models(tiny_model_dir, tmp_path)
    store = storage.get_store()
    full_b = sum(int(f["bytes"]) for f in files_b)
    for cache, room in ((tmp_path / "roomy", 1), (tmp_path / "tight", 0)):
        materialise(store, a, files_a, cache, 1 << 40, weights=False)
        held = sum(p.stat().st_size for p in (cache / a).rglob("*") if p.is_file())
        # counted by the configs it holds, not the model's size: room for them keeps it
        materialise(store, b, files_b, cache, full_b + held * room)
        assert (cache / a / PARTIAL_READY).is_file() is bool(room)
        assert (cache / b / READY).is_file()
