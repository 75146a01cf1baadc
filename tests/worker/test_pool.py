"""The worker's pool forks a phase's replacement child as soon as the old one has exited."""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import wait

from billiard import Process
from celery.concurrency import get_implementation

from worker import pool
from worker.celery_app import app


def _exit_at_once() -> None:
    os._exit(0)


def _sleep() -> None:
    time.sleep(60)


def test_the_worker_app_runs_the_prompt_replacement_pool() -> None:
    # `relaytune worker` passes --pool prefork, which Celery resolves to the configured pool.
    chosen = get_implementation(app.conf.worker_pool)
    assert chosen is pool.TaskPool
    assert chosen.Pool is pool.PromptReplacementPool
    assert app.conf.worker_max_tasks_per_child == 1  # still a fresh child per phase


def test_a_child_whose_sentinel_closed_is_reaped_before_the_pool_looks() -> None:
    child = Process(target=_exit_at_once)
    child.start()
    assert wait([child.sentinel], timeout=60)  # what wakes the pool: the pipe closed
    assert pool.wait_until_reapable(child) is True
    assert child.exitcode == 0


def test_a_killed_child_is_seen_the_same_way() -> None:
    child = Process(target=_sleep)
    child.start()
    os.kill(child.pid, signal.SIGKILL)
    assert wait([child.sentinel], timeout=60)
    assert pool.wait_until_reapable(child) is True
    assert child.exitcode == -signal.SIGKILL


def test_a_running_child_is_left_to_the_periodic_check() -> None:
    child = Process(target=_sleep)
    child.start()
    try:
        assert pool.wait_until_reapable(child, timeout=0.01) is False
        assert child.exitcode is None
    finally:
        child.terminate()
        child.join()
