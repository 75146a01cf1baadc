"""Set torch's thread pools in a phase's child process, before any torch op runs there."""

from __future__ import annotations

import contextlib
import logging

from worker.cpus import ThreadChoice, threads_for_this_worker

logger = logging.getLogger(__name__)


def use_threads(override: int, workers: int) -> ThreadChoice:
    import torch

    choice = threads_for_this_worker(override, workers)
    torch.set_num_threads(choice.threads)
    # Allowed once per process, before inter-op work starts; a process that already ran some
    # (an in-process test worker) keeps the pool it has.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(choice.threads)
    logger.info("using %d threads (%s)", choice.threads, choice.reason)
    return choice
