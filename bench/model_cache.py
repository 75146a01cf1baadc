"""What a worker's model cache costs a phase: a miss (fetch and verify) against a hit.

Registers two models in a local object store (as `relaytune models add` stores them, under
`models/sha256/<digest>/`) and makes each local through worker/model_cache.materialise, the
call a phase's start-up makes, alternating a miss (the node's cache emptied of that model first)
and a hit, `--repeats` times:

    tiny    the tiny Qwen3-VL the tests and the demo use (a few files, about 2 MB)
    padded  the tiny model plus one file of `--padding-mb` random bytes, so that the per-byte
            cost of a fetch (copy and sha256) shows beside the per-file cost

It also times file_sha256 alone over the padding file: the verify rate the estimator assumes
(orchestrator/profiles.py VERIFY_BYTES_PER_S).

Usage: python -m bench.model_cache [--repeats 7] [--padding-mb 256] [--out bench/results/...json]
This is a measurement, not a test: nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report

ROOT = Path(__file__).resolve().parent.parent
PADDING_FILE = "padding.bin"


def _stats(seconds: list[float]) -> dict[str, Any]:
    return {
        "min_s": min(seconds),
        "median_s": statistics.median(seconds),
        "max_s": max(seconds),
        "runs_s": seconds,
    }


def _timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def register(store: Any, directory: Path) -> Any:
    """What `relaytune models add` stores and records, without the job store's row."""
    from orchestrator.model_registry import inspect_model_dir, upload_model_files

    model = inspect_model_dir(directory)
    upload_model_files(store, directory, model)
    return model


def measure(store: Any, model: Any, cache: Path, repeats: int) -> dict[str, Any]:
    """Alternate a miss and a hit, `repeats` times each."""
    from worker.model_cache import materialise

    def make_local(expect_hit: bool) -> None:
        _, hit = materialise(store, model.digest, model.files, cache, 1 << 50)
        if hit != expect_hit:
            raise SystemExit(f"expected a {'hit' if expect_hit else 'miss'}, got the other")

    misses, hits = [], []
    for _ in range(repeats):
        shutil.rmtree(cache / model.digest, ignore_errors=True)
        misses.append(_timed(lambda: make_local(False)))
        hits.append(_timed(lambda: make_local(True)))
    return {
        "files": len(model.files),
        "bytes": model.total_bytes,
        "miss": _stats(misses),
        "hit": _stats(hits),
        "miss_bytes_per_s": model.total_bytes / statistics.median(misses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--padding-mb", type=int, default=256)
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "bench" / "results" / f"model-cache-cpu-{dt.date.today().isoformat()}.json",
    )
    args = parser.parse_args()
    from orchestrator.model_registry import file_sha256
    from orchestrator.storage import LocalStore
    from worker.tiny_model import write_tiny_model

    work = Path(tempfile.mkdtemp(prefix="relaytune-model-cache-"))
    try:
        store = LocalStore(work / "objects")
        tiny = write_tiny_model(work / "tiny-qwen3-vl")
        padded = work / "tiny-padded"
        shutil.copytree(tiny, padded)
        with (padded / PADDING_FILE).open("wb") as f:
            for _ in range(args.padding_mb):
                f.write(os.urandom(1 << 20))
        hashing = [_timed(lambda: file_sha256(padded / PADDING_FILE)) for _ in range(3)]
        models = {}
        for name, directory in (("tiny", tiny), ("padded", padded)):
            model = register(store, directory)
            figures = models[name] = measure(store, model, work / "model-cache", args.repeats)
            miss, hit = figures["miss"], figures["hit"]
            print(
                f"{name:6} {model.total_bytes / 1e6:8.1f} MB: miss median "
                f"{miss['median_s']:.4f}s (min {miss['min_s']:.4f}), "
                f"hit median {hit['median_s']:.5f}s (min {hit['min_s']:.5f})",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verify = args.padding_mb * (1 << 20) / statistics.median(hashing)
    print(f"sha256 alone: {verify / 1e6:.0f} MB/s")
    result = {
        "what": "model cache miss (fetch from a local object store and verify) against a hit",
        "date": dt.date.today().isoformat(),
        "machine": report.machine(),
        "store": "local directory (the standalone stack's)",
        "repeats": args.repeats,
        "models": models,
        "sha256_bytes_per_s": verify,
        "sha256_runs_s": hashing,
    }
    report.write(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
