"""Celery's prefork pool, replacing a phase's child as soon as it has exited.

Every phase runs in a fresh child (`worker_max_tasks_per_child=1`). The pool forks the
replacement when it sees the old child's sentinel (a pipe that closes as the process exits),
but only if the process can be reaped by then; the pipe closes a moment before the kernel lets
it be, so often it could not, and the replacement then waited for the pool's next periodic
check, up to 5 s later, while the worker took no phase. Here the pool waits those few
milliseconds for the exit to complete before looking, so the next child is forked at once.
Nothing else changes: the child still exits after its one phase, and one that is killed
(SIGKILL, out of memory, time limit) is seen and replaced the same way.
"""

from __future__ import annotations

import time
from typing import Any

from celery.concurrency import prefork
from celery.concurrency.asynpool import AsynPool

# The exit has begun when the sentinel closes; finishing it takes milliseconds. A process still
# not reapable after this is left to the pool's periodic check, as before.
REAP_WAIT_S = 0.5
_POLL_S = 0.002


def wait_until_reapable(proc: Any, timeout: float = REAP_WAIT_S) -> bool:
    """Wait for a child whose sentinel has closed to be reapable; True once its exit code is
    known. `exitcode` reaps it without blocking (waitpid WNOHANG)."""
    deadline = time.monotonic() + timeout
    while proc.exitcode is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL_S)
    return True


class PromptReplacementPool(AsynPool):  # type: ignore[misc]
    def _event_process_exit(self, hub: Any, proc: Any) -> None:
        wait_until_reapable(proc)
        super()._event_process_exit(hub, proc)


class TaskPool(prefork.TaskPool):  # type: ignore[misc]
    """`worker_pool` of worker.celery_app; the CLI's `--pool prefork` selects it."""

    Pool = PromptReplacementPool
