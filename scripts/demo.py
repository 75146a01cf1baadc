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

from services.cli.standalone import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / ".relaytune" / "demo"
EXAMPLE = ROOT / "examples" / "circuit-boards"


def main() -> int:
    started = time.monotonic()
    shutil.rmtree(DATA_DIR, ignore_errors=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cli = [sys.executable, "-m", "services.cli.main", "--data-dir", str(DATA_DIR)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_")}
    stack = subprocess.Popen([*cli, "up", "--port", str(port)], env=env, start_new_session=True)
    try:
        try:
            wait_ready(url, timeout=180, alive=lambda: stack.poll() is None)
        except RuntimeError as exc:
            sys.exit(f"{exc}; see {DATA_DIR / 'logs'}")
        submit = subprocess.run(
            [*cli, "submit", str(EXAMPLE), "--api-url", url, "--wait"], env=env, check=False
        )
    finally:
        stack.send_signal(signal.SIGINT)
        try:
            stack.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(stack.pid, signal.SIGKILL)
    print(
        f"demo wall time: {time.monotonic() - started:.1f}s "
        f"({'succeeded' if submit.returncode == 0 else 'FAILED'})"
    )
    return submit.returncode


if __name__ == "__main__":
    sys.exit(main())
