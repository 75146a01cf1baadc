"""ObjectStore.open_read: an object read in pieces as the caller reads it, its size known
before the first byte, from the local directory store and from S3 alike."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from orchestrator.storage import LocalStore, ObjectStore, ObjectStoreUnavailable, S3Store
from tests.orchestrator.s3_helpers import s3_store


def _s3(endpoint: str) -> S3Store:
    return s3_store(endpoint, "relaytune-open-read-test")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "objects")
    return _s3(request.getfixturevalue("s3_endpoint"))


def _read_all(store: ObjectStore, key: str, piece: int) -> tuple[int, list[bytes]]:
    with store.open_read(key) as source:
        size = source.size
        pieces = []
        while chunk := source.read(piece):
            pieces.append(chunk)
    return size, pieces


def test_an_object_is_read_in_pieces_with_its_size_known_first(store: ObjectStore) -> None:
    data = os.urandom(300_000)
    store.put_bytes("r/big.bin", data)

    size, pieces = _read_all(store, "r/big.bin", 64 * 1024)

    assert size == len(data)
    assert b"".join(pieces) == data
    assert len(pieces) == 5 and all(len(p) <= 64 * 1024 for p in pieces)


def test_an_empty_object_has_size_zero_and_no_bytes(store: ObjectStore) -> None:
    store.put_bytes("r/empty", b"")
    assert _read_all(store, "r/empty", 1024) == (0, [])


def test_a_missing_key_is_file_not_found_when_opened(store: ObjectStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.open_read("r/not-there")


def test_s3_opens_with_one_get_and_no_head(s3_endpoint: str) -> None:
    store = _s3(s3_endpoint)
    store.put_bytes("r/one", b"x" * 1000)
    sent: list[str] = []

    def note(model: Any, **_: Any) -> None:
        sent.append(model.name)

    store.client.meta.events.register("before-call.s3", note)
    try:
        assert _read_all(store, "r/one", 100)[0] == 1000
    finally:
        store.client.meta.events.unregister("before-call.s3", note)
    assert sent == ["GetObject"]


class _BreaksAfterFirstRead:
    """An answer's body whose connection drops after the first piece."""

    def __init__(self, body: Any):
        self.body = body
        self.reads = 0
        self.closed = False

    def read(self, size: int) -> bytes:
        from botocore.exceptions import ReadTimeoutError

        self.reads += 1
        if self.reads > 1:
            raise ReadTimeoutError(endpoint_url="http://store.invalid")
        return bytes(self.body.read(size))

    def close(self) -> None:
        self.closed = True
        self.body.close()


def test_an_s3_body_that_breaks_midway_is_unavailable_and_closed(s3_endpoint: str) -> None:
    store = _s3(s3_endpoint)
    store.put_bytes("r/cut", os.urandom(10_000))
    bodies: list[_BreaksAfterFirstRead] = []

    def break_body(parsed: dict[str, Any], **_: Any) -> None:
        bodies.append(_BreaksAfterFirstRead(parsed["Body"]))
        parsed["Body"] = bodies[-1]

    store.client.meta.events.register("after-call.s3.GetObject", break_body)
    with pytest.raises(ObjectStoreUnavailable) as failed, store.open_read("r/cut") as source:
        assert len(source.read(1000)) == 1000
        source.read(1000)

    assert "r/cut" in failed.value.message
    assert "ReadTimeoutError" in failed.value.message
    assert "attempts" not in failed.value.message  # the body was read once, not retried
    assert "store.invalid" not in failed.value.message  # the endpoint stays in the log
    assert [b.closed for b in bodies] == [True]
