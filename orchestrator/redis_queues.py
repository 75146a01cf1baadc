"""Which phase messages a Redis broker still holds, read the way kombu stores them: a list per
queue (and per priority step), plus the `unacked` hash of messages a worker took but has not
acknowledged (with late acks, every phase that a worker is running)."""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Iterable

logger = logging.getLogger(__name__)

# kombu's Redis transport: priority steps 3, 6 and 9 live in their own lists, named
# "<queue>\x06\x16<step>"; step 0 is the queue's own list.
_PRIORITY_SEPARATOR = "\x06\x16"
_PRIORITY_STEPS = (3, 6, 9)
_UNACKED = "unacked"


def _task_id(raw: bytes | str) -> str | None:
    try:
        message = json.loads(raw)
        if isinstance(message, list):  # an unacked entry: [message, exchange, routing key]
            message = message[0]
        return str(message["headers"]["id"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None


def task_ids(raws: Iterable[bytes | str]) -> set[str]:
    return {tid for raw in raws if (tid := _task_id(raw)) is not None}


def waiting_task_ids(broker_url: str, queues: Collection[str]) -> set[str] | None:
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_timeout=5, socket_connect_timeout=5)
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            for key in (queue, *(f"{queue}{_PRIORITY_SEPARATOR}{s}" for s in _PRIORITY_STEPS)):
                pipe.lrange(key, 0, -1)
        pipe.hvals(_UNACKED)
        replies = pipe.execute()
    except redis.RedisError:
        logger.warning("could not read the broker's queues", exc_info=True)
        return None
    return task_ids(raw for reply in replies for raw in reply)
