"""Peak memory of the API (and of the worker's extraction) when fed zip bombs.

Each case is a small zip that inflates to a gigabyte or more:

    member-1gib         ~1 MB zip; annotations.json names images/a.png, which inflates to 1 GiB
    members-2x1gib      ~2 MB zip; two images of 1 GiB less 16 MiB each (just under 2 GiB)
    json-whitespace-1gb ~1 MB zip; annotations.json is 1 GB of whitespace around one valid row
    member-1gib-declared-1kib  as member-1gib, but its header claims 1 KiB: the lie is caught

For every case a fresh API process (uvicorn, SQLite and a local object store in a temporary
folder) receives the upload; its peak resident memory (VmHWM) is read before and after. The
worker's side is measured by running `extract_dataset` on the same zip in a fresh process.
Results go to bench/results/zip-bombs-<date>.json; see bench/zip-bombs.md.

    python scripts/bench_zip_bombs.py                       # this checkout
    python scripts/bench_zip_bombs.py --checkout ../other   # the code of another checkout
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3
CHUNK = 16 * 1024**2
QA = {"question": "Which part is abnormal?", "answer": "the capacitor"}
CLI = "from services.cli.main import app; app()"
EXTRACT = (
    "import resource, sys; from pathlib import Path\n"
    "from orchestrator.dataset_archive import extract_dataset\n"
    "outcome = 'extracted'\n"
    "try:\n    extract_dataset(Path(sys.argv[1]), Path(sys.argv[2]))\n"
    "except Exception as exc:\n    outcome = f'{type(exc).__name__}: {exc}'[:300]\n"
    "print(outcome); print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
)


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def _write_stream(archive: zipfile.ZipFile, name: str, parts: list[tuple[bytes, int]]) -> None:
    """Deflate `parts` (bytes, repeat count) into member `name` without holding it in memory."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(
        info, "w", force_zip64=sum(len(b) * n for b, n in parts) >= 2 * GIB - 1
    ) as member:
        for block, times in parts:
            for _ in range(times):
                member.write(block)


def build_bombs(folder: Path) -> dict[str, Path]:
    zeros = b"\0" * CHUNK
    row = json.dumps(QA).encode()
    cases: dict[str, list[tuple[str, list[tuple[bytes, int]]]]] = {
        "member-1gib": [
            ("annotations.json", [(json.dumps({"a.png": QA}).encode(), 1)]),
            ("images/a.png", [(zeros, GIB // CHUNK)]),
        ],
        "members-2x1gib": [
            ("annotations.json", [(json.dumps({"a.png": QA, "b.png": QA}).encode(), 1)]),
            ("images/a.png", [(zeros, GIB // CHUNK - 1)]),
            ("images/b.png", [(zeros, GIB // CHUNK - 1)]),
        ],
        "json-whitespace-1gb": [
            ("annotations.json", [(b"{", 1), (b" " * 10**7, 100), (b'"a.png": ' + row + b"}", 1)]),
            ("images/a.png", [(_png(), 1)]),
        ],
    }
    paths = {}
    for case, members in cases.items():
        path = folder / f"{case}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, parts in members:
                _write_stream(archive, name, parts)
        paths[case] = path
    liar = folder / "member-1gib-declared-1kib.zip"
    liar.write_bytes(_declare_size(paths["member-1gib"].read_bytes(), "images/a.png", 1024))
    paths[liar.stem] = liar
    return paths


def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """`data` with `name`'s uncompressed size in the central directory (what readers trust)
    replaced by `size`."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 1)
    return data[: at + 24] + size.to_bytes(4, "little") + data[at + 28 :]


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(checkout: Path, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
    env.update(
        PYTHONPATH=str(checkout),
        RELAYTUNE_DATA_DIR=str(data_dir),
        RELAYTUNE_REAPER_INTERVAL_SECONDS="0",
    )
    return env


def _api_case(zip_path: Path, env: dict[str, str], key: str) -> dict[str, Any]:
    port = _free_port()
    api = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.api.main:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        cwd=env["PYTHONPATH"],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        idle = _peak_rss(api.pid)
        started = time.monotonic()
        with zip_path.open("rb") as file:
            response = httpx.post(
                f"{url}/v1/datasets",
                files={"file": (zip_path.name, file)},
                headers={"Authorization": f"Bearer {key}"},
                timeout=900,
            )
        seconds = time.monotonic() - started
        peak = _peak_rss(api.pid)
    finally:
        api.terminate()
        api.wait(30)
    body = response.json()
    error = body.get("error") or {}
    return {
        "status": response.status_code,
        "code": error.get("code"),
        "param": error.get("param"),
        "message": error.get("message"),
        "seconds": round(seconds, 2),
        "api_idle_peak_rss_bytes": idle,
        "api_peak_rss_bytes": peak,
    }


def _worker_case(zip_path: Path, env: dict[str, str], scratch: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT, str(zip_path), str(scratch)],
        env=env,
        cwd=env["PYTHONPATH"],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    outcome, peak = done.stdout.strip().splitlines()[-2:]
    return {"outcome": outcome, "peak_rss_bytes": int(peak)}


def _commit(checkout: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--checkout",
        type=Path,
        default=ROOT,
        help="the repository whose code runs the API (default: this one)",
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    checkout = args.checkout.resolve()
    today = datetime.date.today().isoformat()
    out = args.out or ROOT / "bench" / "results" / f"zip-bombs-{today}.json"
    results: dict[str, Any] = {
        "date": today,
        "commit": _commit(checkout),
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "cases": {},
    }
    with tempfile.TemporaryDirectory(prefix="zip-bombs-") as tmp:
        folder = Path(tmp)
        env = _env(checkout, folder / "data")
        # Run where the code is: `python -c` and `-m` put the working folder first on sys.path.
        subprocess.run(
            [sys.executable, "-c", CLI, "migrate"],
            env=env,
            cwd=checkout,
            check=True,
            capture_output=True,
        )
        created = subprocess.run(
            [sys.executable, "-c", CLI, "api-key", "create", "--tenant", "bench"],
            env=env,
            cwd=checkout,
            check=True,
            capture_output=True,
            text=True,
        )
        key = created.stdout.strip().splitlines()[-1].split()[-1]
        for case, zip_path in build_bombs(folder).items():
            entry: dict[str, Any] = {"zip_bytes": zip_path.stat().st_size}
            entry["api"] = _api_case(zip_path, env, key)
            entry["worker_extract"] = _worker_case(zip_path, env, folder / f"out-{case}")
            results["cases"][case] = entry
            print(
                f"{case}: zip {entry['zip_bytes']} B; API {entry['api']['status']} "
                f"{entry['api']['code']} peak {entry['api']['api_peak_rss_bytes'] / 2**20:.0f}"
                f" MiB; worker extract peak "
                f"{entry['worker_extract']['peak_rss_bytes'] / 2**20:.0f} MiB "
                f"({entry['worker_extract']['outcome'][:80]})",
                flush=True,
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
