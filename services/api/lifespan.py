"""Background work of the API process: the reaper, the orphan sweep and the webhook deliverer,
each on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from datetime import timedelta

from fastapi import FastAPI

from orchestrator.db import session_scope
from orchestrator.leader import Round, take_round
from orchestrator.models import utcnow
from orchestrator.pools import apply_pools_file
from orchestrator.reaper import reap_in_rounds
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from orchestrator.sweep import sweep
from services.api.webhook_sender import deliver_due

logger = logging.getLogger(__name__)


def _reap_once() -> None:
    settings = get_settings()
    handled = reap_in_rounds(
        max_attempts=settings.max_attempts,
        resend_after_seconds=settings.lease_seconds,
        batch=settings.reaper_batch_size,
    )
    if handled is None:
        logger.debug("reaper round skipped: another replica is running one")


def _sweep_once() -> None:
    grace = timedelta(seconds=get_settings().sweep_grace_seconds)
    with session_scope() as session:
        if not take_round(session, Round.SWEEP):
            logger.debug("sweep round skipped: another replica is running one")
            return
        sweep(session, get_store(), grace=grace, now=utcnow())


def _deliver_once() -> None:
    deliver_due()


async def _every(interval: float, work: Callable[[], None], name: str) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(work)
        except Exception:  # keep the loop alive; the next round retries
            logger.exception("%s round failed", name)


def _apply_pools_file() -> None:
    path = get_settings().pools_file
    if path is None:
        return
    with session_scope() as session:
        applied = apply_pools_file(session, path)
    logger.info("pools file %s: %s", path, ", ".join(p.name for p, _ in applied))


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    _apply_pools_file()
    settings = get_settings()
    # The sweep lists the whole bucket, so it runs far less often than the reaper.
    loops = [
        (settings.reaper_interval_seconds, _reap_once, "reaper"),
        (settings.sweep_interval_seconds, _sweep_once, "sweep"),
        (settings.webhook_interval_seconds, _deliver_once, "webhook"),
    ]
    tasks = [
        asyncio.create_task(_every(interval, work, name))
        for interval, work, name in loops
        if interval > 0
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
