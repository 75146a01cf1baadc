"""A worker told to stop (SIGTERM: preemption, scale-down) hands its phase back.

Celery's warm shutdown waits for the running task, which for a training phase can be hours.
So the worker's parent process, as its shutdown begins, tells the child running the phase
(SIGUSR2); the child stops at its next step boundary, saves a checkpoint and re-queues the
phase, which resumes from that checkpoint on another worker. A child that has not finished
within RELAYTUNE_SHUTDOWN_GRACE_SECONDS is killed: the phase's lease then expires and the
reaper re-queues it from its last recorded checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)

# Set in the child when its parent is shutting down; the training loop checks it every step.
requested = threading.Event()

# Not SIGUSR1: billiard's children take that one for Celery's soft time limit.
STOP_SIGNAL = signal.SIGUSR2


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    requested.set()


def listen_in_child() -> None:
    """In a pool child as its task starts: billiard sets its children's signal handlers after
    worker_process_init, so earlier would be too early. A stop that comes before this ends
    the child; it has claimed nothing yet, and its message comes again."""
    requested.clear()
    if threading.current_thread() is not threading.main_thread():
        return  # a thread pool's task: only the main thread may set handlers
    signal.signal(STOP_SIGNAL, _on_stop_signal)


def _pool_children() -> list[int]:
    # billiard's pool processes are this process's children; active_children() also reaps
    # the ones that have exited.
    from billiard.process import active_children

    return [p.pid for p in active_children() if p.pid is not None]


def _send(pids: list[int], sig: int) -> list[int]:
    sent = []
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent.append(pid)
        except ProcessLookupError:  # already gone
            pass
    return sent


def forward_to_children(grace_seconds: float) -> None:
    """In the parent, as its shutdown begins: ask every child to hand its phase back, and kill
    the ones still running once the grace period is over."""
    requested.set()  # a worker without children (--pool solo) runs its phase itself
    pids = _send(_pool_children(), STOP_SIGNAL)
    if not pids:
        return
    logger.warning(
        "shutting down: asked %d running phase(s) to checkpoint and hand back within %.0f s",
        len(pids),
        grace_seconds,
    )

    def kill_late() -> None:
        # Only children still running (a pid of one that exited may have been reused).
        late = _send(sorted(set(pids) & set(_pool_children())), signal.SIGKILL)
        if late:
            logger.warning(
                "shutdown grace of %.0f s over: killed %s; the lease expiry re-queues the phase",
                grace_seconds,
                late,
            )

    timer = threading.Timer(grace_seconds, kill_late)
    timer.daemon = True
    timer.start()
