"""`make demo`: the standalone stack fine-tunes the bundled example end to end.

Starts `relaytune up` on a free port with a fresh data directory, submits
examples/circuit-boards with `relaytune submit --wait` (live per-phase progress and cost, then
the per-phase table and the adapter's path), stops the stack with Ctrl-C's signal, and exits 0
only if the job succeeded.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from services.cli.standalone import free_port

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".relaytune" / "demo"
EXAMPLE = ROOT / "examples" / "circuit-boards"


def wait_until_up(url: str, stack: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.poll() is not None:
            sys.exit(f"relaytune up exited with {stack.returncode}; see {DATA_DIR / 'logs'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"relaytune up was not ready after {timeout:.0f}s; see {DATA_DIR / 'logs'}")


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "services.cli.main", "--data-dir", str(DATA_DIR)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
    stack = subprocess.Popen([*cli, "up", "--port", str(port)], env=env, start_new_session=True)
    try:
        wait_until_up(url, stack)
        submit = subprocess.run([*cli, "submit", str(EXAMPLE), "--api-url", url, "--wait"],
                                env=env, check=False)
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
    print(f"demo wall time: {time.monotonic() - started:.1f}s "
          f"({'succeeded' if submit.returncode == 0 else 'FAILED'})")
    return submit.returncode


if __name__ == "__main__":
    sys.exit(main())
