"""A fresh phase child opens its database and broker connections while it waits for its phase.

The child is forked as soon as the previous one exits, then usually waits for the next
message. Connecting then, not after the message arrived, takes the connects off the path
from one phase's end to the next phase's start: the claim finds an open connection in the
engine's pool, and the send of the next phase after completion an open broker connection.
It runs on a thread, so a store that does not answer never delays the child's start (the
pool kills a child that is not up within a few seconds); whatever it did not finish, the
phase does itself, as it would without it.
"""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger(__name__)

THREAD_NAME = "relaytune-connect-ahead"


def connect() -> None:
    from orchestrator import dispatch
    from orchestrator.db import get_engine

    try:
        with get_engine().connect():
            pass  # back into the pool, open, for the claim
        dispatcher = dispatch.get_dispatcher()
        if isinstance(dispatcher, dispatch.CeleryDispatcher):
            with dispatcher.app.producer_pool.acquire(block=True) as producer:
                producer.connection.ensure_connection(max_retries=1)
    except Exception:  # the phase connects, and reports what fails, itself
        logger.debug("could not connect ahead of the phase", exc_info=True)


def start() -> threading.Thread:
    thread = threading.Thread(target=connect, name=THREAD_NAME, daemon=True)
    thread.start()
    return thread
