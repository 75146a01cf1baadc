"""Background work of the API process: the reaper, on an interval."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI

from orchestrator.db import session_scope
from orchestrator.pools import apply_pools_file
from orchestrator.reaper import reap
from orchestrator.settings import get_settings

logger = logging.getLogger(__name__)


def _reap_once() -> None:
    settings = get_settings()
    with session_scope() as session:
        reap(
            session, max_attempts=settings.max_attempts, resend_after_seconds=settings.lease_seconds
        )


async def _reaper_loop(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await asyncio.to_thread(_reap_once)
        except Exception:  # keep the loop alive; the next round retries
            logger.exception("reaper round failed")


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
    interval = get_settings().reaper_interval_seconds
    task = asyncio.create_task(_reaper_loop(interval)) if interval > 0 else None
    yield
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
