"""The Celery app of the GPU workers; settings follow what long GPU tasks need (CELERY.md).

No torch at import: this module is imported by the worker's parent process, which must never
touch CUDA (children are forked from it). The parent may import torch's modules, which
initialises no CUDA: see worker.preload.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

from orchestrator.settings import Settings, get_settings


def keep_hub_offline(settings: Settings) -> None:
    """Workers load base models from local files only, unless the operator allows downloads:
    a job naming an id that is not in the cache then fails at once instead of waiting on the
    hub. Set before transformers or huggingface_hub is imported, which read it at import."""
    if not settings.allow_hub_downloads:
        os.environ["HF_HUB_OFFLINE"] = "1"


def make_celery() -> Celery:
    settings = get_settings()
    keep_hub_offline(settings)
    hard_limit = settings.phase_time_limit_seconds
    app = Celery("relaytune", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.broker_url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        # At-least-once: ack after the phase ends, and re-deliver if the child dies; the job
        # store's attempt cap and claim fencing stop a poison phase from looping.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        # A fresh child per phase gives GPU memory back to the driver after every phase; the
        # pool forks its replacement as soon as the old one has exited (worker.pool). Celery
        # takes this over `--pool prefork`, the default, and the CLI's choice.
        worker_max_tasks_per_child=1,
        worker_pool="worker.pool:TaskPool",
        task_time_limit=hard_limit,
        task_soft_time_limit=hard_limit - 300,
        # Redis re-delivers unacked messages after this; it must outlast the longest phase.
        broker_transport_options={"visibility_timeout": hard_limit + 3600},
        # A broker blip must not kill a running phase. With True, Celery terminates every
        # unacked late-ack task when the broker connection drops, because that delivery can
        # no longer be acked and will come again; the phase then waits out its lease before
        # the reaper re-runs it. Here the job store, not the broker, decides who runs a
        # phase: the run goes on and reports through the database. Its message comes again
        # (Redis puts an unacked message back when the channel closes, or after the
        # visibility timeout if it could not), and the duplicate is harmless: the parent
        # drops a delivery whose attempt is no longer queued (worker.strategy), and a claim
        # that gets past that check is refused by the fenced update.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_send_sent_event=True,
        worker_send_task_events=True,
        task_ignore_result=True,
    )
    return app


@signals.celeryd_after_setup.connect
def _preload_before_forking(**_: Any) -> None:
    # celeryd_after_setup comes after logging is set up and before the pool forks its first
    # child; every later child is forked from this same parent, so all start preloaded.
    from worker.preload import freeze_heap, preload

    if get_settings().worker_preload:
        preload()
    freeze_heap()  # last: whatever the parent holds from now on is collected as usual


@signals.worker_process_init.connect
def _own_database_connections(**_: Any) -> None:
    # The parent may have used the job store (its queue, stale deliveries) before forking.
    from orchestrator.db import forget_inherited_connections
    from worker import child_warmup

    forget_inherited_connections()
    child_warmup.start()  # new ones, opened before the phase arrives


@signals.task_prerun.connect
def _listen_for_shutdown(**_: Any) -> None:
    # The parent's shutdown reaches the child running the phase as a signal (worker.shutdown).
    from worker.shutdown import listen_in_child

    listen_in_child()


@signals.worker_shutting_down.connect
def _hand_back_running_phases(**_: Any) -> None:
    # In the parent, inside its SIGTERM handler: warm shutdown would wait for the phase to
    # end; the child is asked to checkpoint and hand it back instead, within the grace period.
    from worker.shutdown import forward_to_children

    forward_to_children(get_settings().shutdown_grace_seconds)


@signals.worker_process_init.connect
def _share_cpus_among_workers(**_: Any) -> None:
    # In the child, before its phase runs a torch op: thread pools are per process.
    from worker.threads import use_threads

    settings = get_settings()
    use_threads(settings.worker_threads, settings.workers_per_machine)


app = make_celery()
