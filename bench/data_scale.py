"""How upload and preprocessing scale with the size of a data set: 20, 200 and 2,000 images.

The images are circuit boards drawn as scripts/make_example_dataset.py draws the bundled
example's (small PNGs, one question each), with defects drawn at random so any number can be
made. For each size:

    upload      POST /v1/datasets of the zipped folder to the API on loopback (uvicorn against
                PostgreSQL, Redis, S3: bench/stack.py), which checks every member and stores it;
                the API process's peak RSS (psutil, sampled every 10 ms) against its RSS before
    preprocess  the preprocess phase's work (worker.recipe.preprocess.build_artifact: check,
                split, augment with the default one copy, tokenize with the tiny Qwen3-VL's
                processor) in this process, on the same folder; the artifact's bytes

Sets above --preprocess-max (2000) are uploaded only. Usage:
    python -m bench.data_scale [--sizes 20 200 2000] [--preprocess-max 2000] [--quick]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

from bench.machine import ROOT, write_result
from bench.stack import running_api, service_env


def example_script() -> ModuleType:
    """scripts/make_example_dataset.py (scripts/ is not a package)."""
    path = ROOT / "scripts" / "make_example_dataset.py"
    spec = importlib.util.spec_from_file_location("make_example_dataset", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_dataset(out_dir: Path, images: int, seed: int = 0) -> Path:
    """`images` boards with a defect each, position and kind drawn with replacement."""
    import json

    script = example_script()
    rng = random.Random(seed)
    pairs = [(slot, kind) for slot in script.SLOTS for kind in sorted(script.DEFECTS)]
    (out_dir / "images").mkdir(parents=True)
    annotations = {}
    for number in range(1, images + 1):
        image, answer = script.draw_case(*rng.choice(pairs), rng)
        name = f"case{number}.png"
        image.save(out_dir / "images" / name, format="PNG", optimize=True)
        annotations[name] = {"question": script.QUESTION, "answer": answer}
    (out_dir / "annotations.json").write_text(json.dumps(annotations, indent=2) + "\n")
    return out_dir


@contextmanager
def peak_rss(pid: int) -> Iterator[dict[str, float]]:
    """The process's RSS before the block and its highest while it ran, in MiB."""
    import psutil

    process = psutil.Process(pid)
    seen = {"before_mib": process.memory_info().rss / 1024**2}
    seen["peak_mib"] = seen["before_mib"]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            seen["peak_mib"] = max(seen["peak_mib"], process.memory_info().rss / 1024**2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield seen
    finally:
        done.set()
        sampler.join()


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure(size: int, work: Path, api: Any, model_dir: str, preprocess: bool) -> dict[str, Any]:
    from orchestrator.hyperparameters import Hyperparameters
    from services.cli.client import zip_folder
    from worker.recipe.preprocess import build_artifact

    folder = make_dataset(work / f"data-{size}", size)
    archive = zip_folder(folder)
    with (
        httpx.Client(base_url=api.url, headers=api.headers, timeout=600) as http,
        peak_rss(api.process.pid) as memory,
    ):
        started = time.perf_counter()
        files = {"file": (f"boards-{size}.zip", archive, "application/zip")}
        response = http.post("/v1/datasets", files=files)
        if response.is_error:
            raise RuntimeError(f"upload of {size} images: {response.status_code} {response.text}")
        upload_s = time.perf_counter() - started
    row: dict[str, Any] = {
        "images": size,
        "zip_bytes": len(archive),
        "upload_s": upload_s,
        "upload_ms_per_image": upload_s / size * 1000,
        "api_rss_before_mib": memory["before_mib"],
        "api_rss_peak_mib": memory["peak_mib"],
    }
    if not preprocess:
        return row | {"preprocess_s": None, "preprocess_ms_per_image": None}
    started = time.perf_counter()
    manifest = build_artifact(
        folder, model_dir, work / f"artifact-{size}", hyperparameters=Hyperparameters()
    )
    preprocess_s = time.perf_counter() - started
    artifact = folder_bytes(work / f"artifact-{size}")
    return row | {
        "preprocess_s": preprocess_s,
        "preprocess_ms_per_image": preprocess_s / size * 1000,
        "samples_in_artifact": manifest["num_samples"],
        "artifact_bytes": artifact,
        "artifact_bytes_per_sample": artifact / manifest["num_samples"],
    }


def run(
    quick: bool = False, sizes: tuple[int, ...] = (20, 200, 2000), preprocess_max: int = 2000
) -> dict[str, Any]:
    from worker.tiny_model import write_tiny_model

    if quick:
        sizes, preprocess_max = (5, 10), 10
    rows = []
    with (
        tempfile.TemporaryDirectory(prefix="relaytune-bench-data-") as tmp,
        service_env() as env,
        # 2,000 images is over the default RELAYTUNE_MAX_IMAGES (1,000): raised for the bench.
        running_api(env, {"RELAYTUNE_MAX_IMAGES": str(max(sizes))}) as api,
    ):
        work = Path(tmp)
        model_dir = str(write_tiny_model(work / "tiny-qwen3-vl"))
        warm = min(20, *sizes)
        measure(warm, work / "warm", api, model_dir, True)  # imports, first-call costs
        for size in sizes:
            row = measure(size, work, api, model_dir, size <= preprocess_max)
            rows.append(row)
            print(f"  data_scale {size:5} images: {row}", flush=True)
    return {
        "what": "data set upload and preprocess time per image, API memory, artifact bytes",
        "settings": {
            "sizes": list(sizes),
            # Larger sets are uploaded only: preprocessing costs about a second per image on a
            # loaded 2-core machine, which would not fit `make bench`'s time.
            "preprocess_max_images": preprocess_max,
            "augmentation_copies": 1,
            "model": "tiny Qwen3-VL",
        },
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 200, 2000])
    parser.add_argument(
        "--preprocess-max", type=int, default=2000, help="preprocess sets up to this size"
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args.quick, tuple(args.sizes), args.preprocess_max)
    write_result("data-scale", result, args.out)


if __name__ == "__main__":
    main()
