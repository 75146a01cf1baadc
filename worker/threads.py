"""Set torch's thread pools in a phase's child process, before any torch op runs there."""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from worker.cpus import ThreadChoice, threads_for_this_worker

logger = logging.getLogger(__name__)


def use_threads(override: int, workers: int) -> ThreadChoice:
    choice = threads_for_this_worker(override, workers)
    if "torch" in sys.modules:  # preloaded by the parent
        import torch

        torch.set_num_threads(choice.threads)
        # Allowed once per process, before inter-op work starts; a process that already ran
        # some (an in-process test worker) keeps the pool it has.
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(choice.threads)
    else:
        # Not imported here: this runs in Celery's child start-up, which must report back
        # within worker_proc_alive_timeout (4 s), and importing torch can take longer. torch
        # sizes its pool from these when the phase imports it.
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(choice.threads)
    logger.info("using %d threads (%s)", choice.threads, choice.reason)
    return choice
