"""Registered models on a worker's local disk: `<data_dir>/model-cache/<digest>`, fetched
once from the object store, verified against the recorded sha256 of every file, shared by
the worker processes of a node, and capped in size (least recently used goes first).

One file lock (fcntl) guards the whole cache, so two processes wanting the same model fetch
it once, and eviction never removes a model while another process is writing one. A model is
ready when its marker file exists; it is written after every file is verified, and touched on
each use, which is what "recently used" means. A fetch that stopped half way resumes: files
already there with the right hash are kept.

Preprocessing reads no weights (orchestrator/model_files.py), so it fetches a partial entry:
every file but the weights, under its own marker. A training phase on the same node later
completes that entry in place, fetching only the weights; the files preprocessing reads are
never rewritten, so a process still reading them is not disturbed. Eviction counts the bytes
an entry holds, partial or complete.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from orchestrator.base_models import KnownModel, resolve_base_model
from orchestrator.db import session_scope
from orchestrator.errors import InvalidRequest, RelaytuneError
from orchestrator.layout import model_file_key
from orchestrator.model_files import files_read
from orchestrator.model_registry import file_sha256, find_model
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore, get_store
from worker.timing import PhaseClock

logger = logging.getLogger(__name__)

CACHE_DIR = "model-cache"
READY = ".relaytune-ready"  # every file is there and verified
PARTIAL_READY = ".relaytune-ready-without-weights"  # every file but the weights is
LOCK = ".lock"


class ModelCacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RELAYTUNE_")

    # The most the cache keeps on disk; the model being fetched is kept even if larger.
    model_cache_max_gb: float = 200.0

    @property
    def max_bytes(self) -> int:
        return int(self.model_cache_max_gb * 1024**3)


class ModelCorrupt(RelaytuneError):
    code = "model_corrupt"


def cache_root(settings: Settings) -> Path:
    return settings.data_dir / CACHE_DIR


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK).open("a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _inside(directory: Path, relative: str) -> Path:
    path = (directory / relative).resolve()
    if not path.is_relative_to(directory.resolve()):
        raise ModelCorrupt(f"a registered model lists a file outside its directory: {relative}")
    return path


def _fetch(store: ObjectStore, digest: str, files: list[dict[str, Any]], partial: Path) -> None:
    for file in files:
        target = _inside(partial, file["path"])
        if target.is_file() and file_sha256(target) == file["sha256"]:
            continue  # left by a fetch that stopped half way
        store.get_file(model_file_key(digest, file["path"]), target)
        if file_sha256(target) != file["sha256"]:
            target.unlink()
            raise ModelCorrupt(
                f"the stored {file['path']} of model {digest[:12]} does not match its "
                "recorded sha256; register the model again",
                param="base_model",
            )


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _marker(entry: Path) -> Path | None:
    """The entry's ready marker (complete first), or None for a directory being written."""
    for name in (READY, PARTIAL_READY):
        if (entry / name).is_file():
            return entry / name
    return None


def _evict(root: Path, keep: str, max_bytes: int) -> None:
    """Remove the least recently used models, complete or partial, until the cache fits
    (never `keep`)."""
    used = []
    for entry in root.iterdir():
        marker = _marker(entry) if entry.is_dir() else None
        if marker is not None:
            used.append((marker.stat().st_mtime, entry))
    ready = [entry for _, entry in sorted(used)]
    sizes = {entry: _size(entry) for entry in ready}
    total = sum(sizes.values())
    for entry in ready:
        if total <= max_bytes:
            break
        if entry.name == keep:
            continue
        shutil.rmtree(entry, ignore_errors=True)
        total -= sizes[entry]
        logger.info("model cache: evicted %s (%d bytes)", entry.name, sizes[entry])


def materialise(
    store: ObjectStore,
    digest: str,
    files: list[dict[str, Any]],
    root: Path,
    max_bytes: int,
    *,
    weights: bool = True,
) -> tuple[Path, bool]:
    """The local directory of a registered model, and whether it held what is asked already.
    Without `weights`, every file but the weights is enough."""
    target = root / digest
    with _locked(root):
        held = _marker(target)
        if held is not None and (held.name == READY or not weights):
            os.utime(held)
            return target, True
        wanted = files_read(files, weights=weights)
        if held is not None:
            # A partial entry asked for the weights: its verified files stay, the weights are
            # added beside them, and only then does it say it is complete.
            _fetch(store, digest, wanted, target)
            (target / READY).touch()
            held.unlink()
        else:
            partial = root / f"{digest}.partial"
            _fetch(store, digest, wanted, partial)
            (partial / (READY if weights else PARTIAL_READY)).touch()
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        _evict(root, keep=digest, max_bytes=max_bytes)
        return target, False


def resolve_local_model(
    name: str, settings: Settings, clock: PhaseClock | None = None, *, weights: bool = True
) -> KnownModel:
    """Where this worker loads a base model from. The server's own names (the default, the
    model root, allowed names) need no job store; any other name is looked up among the
    registered models (a name is registered only when the server knows it no other way) and
    its location is the local cache directory it is materialised into. With a clock, making
    it local is measured as the run's model_fetch, and whether the cache held it is noted.
    Without `weights`, only the files read without the weights are made local."""
    try:
        return resolve_base_model(name, settings)
    except InvalidRequest as exc:
        if exc.code != "unknown_model":
            raise
    with session_scope() as session:
        model = resolve_base_model(name, settings, session)  # unknown_model lists every name
        registered = find_model(session, model.name)
        if registered is None:
            return model
        digest, files = registered.digest, list(registered.files)
    measured: AbstractContextManager[None] = (
        clock.measure("model_fetch") if clock is not None else nullcontext()
    )
    with measured:
        path, hit = materialise(
            get_store(),
            digest,
            files,
            cache_root(settings),
            ModelCacheSettings().max_bytes,
            weights=weights,
        )
    if clock is not None:
        clock.note(model_cache_hit=hit)
    logger.info("model cache %s: %s (%s)", "hit" if hit else "miss", model.name, digest[:12])
    return replace(model, location=str(path))
