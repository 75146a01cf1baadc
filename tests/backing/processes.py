"""Servers started here: a managed subprocess in a scratch directory, readiness waits, ports."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_not_exception_type, stop_after_delay, wait_fixed

LOCALHOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

log = logging.getLogger("tests.backing")


class ServiceError(RuntimeError):
    """A test service could not be found or started."""


class ManagedProcess:
    """A server started here in a scratch directory of its own; `stop()` removes both."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str | int | Path],
        workdir: Path,
        *,
        stop_signal: signal.Signals = signal.SIGTERM,
        run_as: pwd.struct_passwd | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.log_path = workdir / "server.log"
        self._stop_signal = stop_signal
        with self.log_path.open("wb") as log_file:
            self.popen = subprocess.Popen(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                # A session of its own: the Ctrl-C meant for the test command must not reach the
                # servers under it before that command has finished.
                start_new_session=True,
                **privilege_drop(run_as),
            )

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(self._stop_signal)
            try:
                self.popen.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("%s ignored %s; killing it", self.name, self._stop_signal.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOCALHOST, 0))
        return int(sock.getsockname()[1])


def privilege_drop(account: pwd.struct_passwd | None) -> dict[str, Any]:
    """`subprocess` keyword arguments that run the child as `account` (none: as this user)."""
    if account is None:
        return {}
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def make_workdir(prefix: str, owner: pwd.struct_passwd | None = None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    return workdir


def wait_until_ready(check: Callable[[], object], what: str, server: ManagedProcess) -> None:
    """Retry `check` until it passes; fail early if `server` exits, late after READY_TIMEOUT_S."""

    def attempt() -> None:
        returncode = server.popen.poll()
        if returncode is not None:
            raise ServiceError(
                f"{what} exited with status {returncode} before it was ready:\n{server.log_tail()}"
            )
        check()

    retrying = Retrying(
        stop=stop_after_delay(READY_TIMEOUT_S),
        wait=wait_fixed(0.2),
        retry=retry_if_not_exception_type(ServiceError),
        reraise=True,
    )
    try:
        retrying(attempt)
    except ServiceError:
        raise
    except Exception as exc:
        raise ServiceError(
            f"{what} was not ready after {READY_TIMEOUT_S:.0f}s ({exc}):\n{server.log_tail()}"
        ) from exc
