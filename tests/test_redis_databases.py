"""Concurrent test runs on one Redis server never share the database of their Celery traffic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import redis

from tests.redis_databases import LOCK_DATABASE, RedisDatabaseClaim, with_database


@pytest.fixture
def server_url(service_env: dict[str, str]) -> str:
    return service_env["RELAYTUNE_BROKER_URL"]


@pytest.fixture
def key_prefix(server_url: str) -> Iterator[str]:
    """Claim keys of this test's own: the claims below never take a real run's database."""
    prefix = f"relaytune-tests:claim-test-{uuid.uuid4().hex}:"
    yield prefix
    locks = redis.Redis.from_url(with_database(server_url, LOCK_DATABASE))
    for key in locks.scan_iter(f"{prefix}*"):
        locks.delete(key)


def test_another_run_on_this_server_gets_another_database(
    private_redis_url: str,
    server_url: str,
) -> None:
    with RedisDatabaseClaim(server_url) as other_run:
        assert other_run != private_redis_url
        assert other_run.rsplit("/", 1)[1] not in {"0", str(LOCK_DATABASE)}


def test_when_every_database_is_claimed_the_next_run_is_refused_saying_so(
    server_url: str,
    key_prefix: str,
) -> None:
    runs = [
        RedisDatabaseClaim(server_url, databases=range(1, 3), key_prefix=key_prefix, wait_s=0)
        for _ in range(3)
    ]
    assert sorted(run.claim() for run in runs[:2]) == [1, 2]
    with pytest.raises(RuntimeError, match="claimed by another test run"):
        runs[2].claim()
    freed = runs[0].database
    runs[0].release()
    assert runs[2].claim() == freed


def test_a_claim_that_expired_and_was_taken_over_is_not_released_by_its_old_owner(
    server_url: str,
    key_prefix: str,
) -> None:
    old, new = (
        RedisDatabaseClaim(server_url, databases=range(1, 2), key_prefix=key_prefix)
        for _ in range(2)
    )
    assert old.claim() == 1
    old.locks.delete(f"{key_prefix}1")  # its time to live ran out
    assert new.claim() == 1
    old.release()
    assert old.locks.get(f"{key_prefix}1") == new.owner.encode()


def test_a_claim_outlives_its_time_to_live_while_its_run_goes_on(
    server_url: str,
    key_prefix: str,
) -> None:
    run = RedisDatabaseClaim(server_url, databases=range(1, 2), key_prefix=key_prefix, ttl_s=1)
    with run:
        time.sleep(2.5)  # past two times to live
        assert run.locks.get(f"{key_prefix}1") == run.owner.encode()
    assert run.locks.get(f"{key_prefix}1") is None  # given back at the end
