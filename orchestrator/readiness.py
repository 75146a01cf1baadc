"""Whether the stores that requests need answer: the job database, the broker, the object store.

The checks run side by side, each with a short deadline: one that has not answered by then
counts as down, so a readiness probe never hangs on a host that drops its packets.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait

from sqlalchemy import text

from orchestrator.db import get_engine
from orchestrator.errors import RelaytuneError
from orchestrator.settings import get_settings
from orchestrator.storage import get_store

logger = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 3.0
# What each check is called in an answer's details, and in its message.
LABELS = {"database": "the database", "broker": "the broker", "object_store": "the object store"}
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class NotReady(RelaytuneError):
    status_code = 503
    code = "not_ready"


def check_database() -> None:
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))


def check_broker(url: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    if url.startswith(REDIS_SCHEMES):
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    from kombu.connection import Connection  # any other broker Celery speaks (AMQP, SQS, ...)

    with Connection(url, connect_timeout=timeout) as connection:
        connection.ensure_connection(
            max_retries=1, interval_start=0, interval_step=0, timeout=timeout
        )


def check_object_store() -> None:
    get_store().exists("readyz-probe")  # a missing object is an answer too


def run_checks(timeout: float = CHECK_TIMEOUT_S) -> dict[str, str | None]:
    """Each check's name with None when it answered, else why it counts as down."""
    broker_url = get_settings().broker_url
    checks: dict[str, Callable[[], None]] = {
        "database": check_database,
        "broker": lambda: check_broker(broker_url, timeout),
        "object_store": check_object_store,
    }
    pool = ThreadPoolExecutor(max_workers=len(checks), thread_name_prefix="readiness")
    futures = {name: pool.submit(check) for name, check in checks.items()}
    wait(futures.values(), timeout=timeout)
    pool.shutdown(wait=False)  # a check still waiting on its socket ends on its own
    problems: dict[str, str | None] = {}
    for name, future in futures.items():
        if not future.done():
            problems[name] = f"no answer within {timeout:g} s"
        elif (error := future.exception()) is not None:
            # The answer names the error's kind only: hosts and ports stay in the log.
            logger.warning("readiness: %s does not answer: %s", LABELS[name], error)
            problems[name] = type(error).__name__
        else:
            problems[name] = None
    return problems


def require_ready(timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise NotReady naming every store that does not answer."""
    problems = run_checks(timeout)
    down = [LABELS[name] for name, problem in problems.items() if problem is not None]
    if not down:
        return
    names = down[0] if len(down) == 1 else f"{', '.join(down[:-1])} and {down[-1]}"
    verb = "does" if len(down) == 1 else "do"
    details = [
        {
            "check": name,
            "status": "ok" if problem is None else "down",
            **({"reason": problem} if problem else {}),
        }
        for name, problem in problems.items()
    ]
    raise NotReady(f"not ready: {names} {verb} not answer", details=details)
