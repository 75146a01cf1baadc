"""A Redis database of one test run's own, for the Celery traffic of its tests.

Test runs on one machine (a developer's, CI's, several worktrees) share one Redis server. Each
run claims a free database number with an atomic `SET NX` of a lock key (in database 15, next
to the suite's default), renews the claim while it runs, and gives it back at the end. A run
that died without giving its claim back loses it when the claim's time to live runs out.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import redis

logger = logging.getLogger(__name__)

LOCK_DATABASE = 15
# 0 is a developer's own; 15 holds the claims and the suite's default broker database.
TEST_DATABASES = range(1, 15)
KEY_PREFIX = "relaytune-tests:redis-db:"
CLAIM_TTL_S = 300

# Delete or renew the claim only while it is still this run's (it may have expired and been
# claimed by another run meanwhile).
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then "
    "return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
)


def with_database(url: str, database: int) -> str:
    """The same server's URL with another database number."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


class RedisDatabaseClaim:
    """`with RedisDatabaseClaim(url) as claimed_url:` holds one of `databases` until the block
    ends; it waits up to `wait_s` for one to come free."""

    def __init__(
        self,
        server_url: str,
        *,
        databases: range = TEST_DATABASES,
        key_prefix: str = KEY_PREFIX,
        ttl_s: int = CLAIM_TTL_S,
        wait_s: float = 120.0,
    ):
        self.server_url = server_url
        self.databases = databases
        self.key_prefix = key_prefix
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.locks = redis.Redis.from_url(with_database(server_url, LOCK_DATABASE))
        self.database: int | None = None
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew, name="redis-db-claim", daemon=True)

    def _key(self, database: int) -> str:
        return f"{self.key_prefix}{database}"

    def claim(self) -> int:
        deadline = time.monotonic() + self.wait_s
        while True:
            for database in self.databases:
                if self.locks.set(self._key(database), self.owner, nx=True, ex=self.ttl_s):
                    self.database = database
                    return database
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"every test Redis database ({self.databases.start}-"
                    f"{self.databases.stop - 1}) of {self.server_url} is claimed by another "
                    f"test run (keys {self.key_prefix}* in database {LOCK_DATABASE})"
                )
            time.sleep(1.0)

    def release(self) -> None:
        if self.database is not None:
            self.locks.eval(_RELEASE, 1, self._key(self.database), self.owner)
            self.database = None

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            assert self.database is not None
            try:
                renewed = self.locks.eval(
                    _RENEW, 1, self._key(self.database), self.owner, self.ttl_s
                )
            except redis.RedisError:
                logger.warning(
                    "could not renew the claim of Redis database %s", self.database, exc_info=True
                )
                continue
            if not renewed:
                logger.warning("the claim of Redis database %s was lost", self.database)
                return

    def __enter__(self) -> str:
        database = self.claim()
        self._renewer.start()
        return with_database(self.server_url, database)

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._renewer.join(timeout=5)
        self.release()
        self.locks.close()
