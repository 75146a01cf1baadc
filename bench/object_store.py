"""relaytune's S3 object store against raw boto3, moving the same bytes to the same endpoint.

    relaytune  S3Store.put_file / get_file for one large object; publish_dir / download_dir for
               a directory of many small files (a checkpoint's or artifact's shape)
    raw        boto3's upload_file / download_file with the default TransferConfig for the large
               object; a plain put_object / get_object loop over the small ones

The endpoint is RELAYTUNE_TEST_S3_ENDPOINT when set, else a moto server started here (moto keeps
objects in memory, so its figures say more about the client's overhead than about a disk).
Each round runs both sides, alternating which goes first; figures are MiB/s, and the ratio is
relaytune over raw (above 1: relaytune is faster). Usage:
    python -m bench.object_store [--rounds 3] [--large-mib 256] [--small 500] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.machine import ratio_summary, write_result

BUCKET = "relaytune-bench"
SMALL_BYTES = 16 * 1024
OPERATIONS = ("large_upload", "large_download", "small_upload", "small_download")


@contextlib.contextmanager
def endpoint() -> Iterator[str]:
    from tests.backing.s3 import ENV_S3_ENDPOINT, start_moto

    if os.environ.get(ENV_S3_ENDPOINT):
        yield os.environ[ENV_S3_ENDPOINT]
        return
    url, server = start_moto()
    try:
        yield url
    finally:
        server.stop()


def make_store(url: str) -> Any:
    from orchestrator.storage import S3Store
    from tests.backing.s3 import DEFAULT_S3_SETTINGS, ENV_S3_ACCESS_KEY, ENV_S3_SECRET_KEY

    def setting(name: str) -> str:
        return os.environ.get(name) or DEFAULT_S3_SETTINGS[name]

    store = S3Store(
        endpoint=url,
        bucket=BUCKET,
        access_key=setting(ENV_S3_ACCESS_KEY),
        secret_key=setting(ENV_S3_SECRET_KEY),
        region="us-east-1",
    )
    store.ensure_bucket()
    return store


def write_inputs(work: Path, large_mib: int, small: int) -> tuple[Path, Path]:
    large = work / "large.bin"
    with large.open("wb") as out:
        for _ in range(large_mib):
            out.write(os.urandom(1024 * 1024))
    folder = work / "small"
    folder.mkdir()
    for index in range(small):
        (folder / f"part-{index:05d}.bin").write_bytes(os.urandom(SMALL_BYTES))
    return large, folder


def relaytune_side(store: Any, large: Path, folder: Path, out: Path, prefix: str) -> dict[str, Any]:
    from orchestrator.storage import download_dir, publish_dir

    return {
        "large_upload": lambda: store.put_file(f"{prefix}/large.bin", large),
        "large_download": lambda: store.get_file(f"{prefix}/large.bin", out / "large.bin"),
        "small_upload": lambda: publish_dir(store, folder, f"{prefix}/small"),
        "small_download": lambda: download_dir(store, f"{prefix}/small", out / "small"),
    }


def raw_side(client: Any, large: Path, folder: Path, out: Path, prefix: str) -> dict[str, Any]:
    files = sorted(folder.iterdir())
    out.mkdir(parents=True, exist_ok=True)

    def small_upload() -> None:
        for path in files:
            client.put_object(
                Bucket=BUCKET, Key=f"{prefix}/small/{path.name}", Body=path.read_bytes()
            )

    def small_download() -> None:
        (out / "small").mkdir(parents=True, exist_ok=True)
        for path in files:
            body = client.get_object(Bucket=BUCKET, Key=f"{prefix}/small/{path.name}")["Body"]
            (out / "small" / path.name).write_bytes(body.read())

    return {
        "large_upload": lambda: client.upload_file(str(large), BUCKET, f"{prefix}/large.bin"),
        "large_download": lambda: client.download_file(
            BUCKET, f"{prefix}/large.bin", str(out / "large.bin")
        ),
        "small_upload": small_upload,
        "small_download": small_download,
    }


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def requests_of(client: Any, action: Callable[[], object]) -> dict[str, int]:
    """The S3 requests an action sends, by operation name (HeadObject, PutObject, ...)."""
    counts: dict[str, int] = {}

    def count(model: Any, **_: Any) -> None:
        counts[model.name] = counts.get(model.name, 0) + 1

    client.meta.events.register("before-call.s3", count)
    try:
        action()
    finally:
        client.meta.events.unregister("before-call.s3", count)
    return counts


def run(
    quick: bool = False, rounds: int = 3, large_mib: int = 256, small: int = 500
) -> dict[str, Any]:
    from tests.backing.s3 import s3_client

    if quick:
        rounds, large_mib, small = 1, 4, 20
    sizes = {"large": large_mib * 1024 * 1024, "small": small * SMALL_BYTES}
    runs: list[dict[str, Any]] = []
    with endpoint() as url, tempfile.TemporaryDirectory(prefix="relaytune-bench-s3-") as tmp:
        work = Path(tmp)
        large, folder = write_inputs(work, large_mib, small)
        store = make_store(url)
        raw = s3_client(url)
        sides = {"relaytune": (store.client, relaytune_side), "raw": (raw, raw_side)}
        requests: dict[str, dict[str, dict[str, int]]] = {}
        for round_ in range(rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                client, build = sides[side]
                out = work / f"out-{side}-{round_}"
                actions = build(
                    store if side == "relaytune" else raw, large, folder, out, f"{side}-{round_}"
                )
                seconds = {op: timed(actions[op]) for op in OPERATIONS}
                rates = {op: sizes[op.split("_")[0]] / 1024**2 / s for op, s in seconds.items()}
                runs.append({"round": round_, "side": side, "seconds": seconds, "mib_per_s": rates})
                print(
                    f"  object_store {side:9} round {round_}: "
                    + ", ".join(f"{op} {rate:.1f} MiB/s" for op, rate in rates.items()),
                    flush=True,
                )
        # Which requests each side sends for one small object, read back from the client.
        for side, (client, build) in sides.items():
            out = work / f"count-{side}"
            actions = build(
                store if side == "relaytune" else raw, large, folder, out, f"count-{side}"
            )
            requests[side] = {
                op: requests_of(client, actions[op]) for op in ("small_upload", "small_download")
            }
    summary = {
        op: ratio_summary(
            {s: [r["mib_per_s"][op] for r in runs if r["side"] == s] for s in sides},
            "relaytune",
            "raw",
        )
        for op in OPERATIONS
    }
    return {
        "what": "object store MiB/s, relaytune's S3Store vs raw boto3, same bytes, same endpoint",
        "settings": {
            "rounds": rounds,
            "large_mib": large_mib,
            "small_objects": small,
            "small_bytes": SMALL_BYTES,
            "endpoint": "moto" if not os.environ.get("RELAYTUNE_TEST_S3_ENDPOINT") else "given",
        },
        "runs": runs,
        "requests_for_small_objects": requests,
        "summary": summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large-mib", type=int, default=256)
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    write_result("object-store", run(args.quick, args.rounds, args.large_mib, args.small), args.out)


if __name__ == "__main__":
    main()
