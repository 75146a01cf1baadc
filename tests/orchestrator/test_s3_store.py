"""S3Store's requests: a small file goes up and comes back with one request each (no HEAD
before a download, no transfer manager per file); one at or above the multipart threshold
still goes through boto3's transfer manager."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.storage import ObjectStoreUnavailable, S3Store, download_dir, publish_dir
from tests.orchestrator.s3_helpers import s3_store

PART = 5 * 1024 * 1024  # S3's smallest part


def _store(endpoint: str, **options: int) -> S3Store:
    return s3_store(endpoint, "relaytune-s3-store-test", **options)


def _requests(store: S3Store, action: Callable[[], object]) -> list[str]:
    """The S3 operations `action` sent, in order."""
    sent: list[str] = []

    def note(model: Any, **_: Any) -> None:
        sent.append(model.name)

    store.client.meta.events.register("before-call.s3", note)
    try:
        action()
    finally:
        store.client.meta.events.unregister("before-call.s3", note)
    return sent


def test_a_small_file_is_one_put_and_one_get(s3_endpoint: str, tmp_path: Path) -> None:
    store = _store(s3_endpoint)
    source = tmp_path / "small"
    source.write_bytes(os.urandom(16 * 1024))
    back = tmp_path / "out" / "small"

    assert _requests(store, lambda: store.put_file("s/small", source)) == ["PutObject"]
    assert _requests(store, lambda: store.get_file("s/small", back)) == ["GetObject"]
    assert back.read_bytes() == source.read_bytes()
    assert not back.with_name("small.partial").exists()


def test_a_directory_of_small_files_costs_one_request_per_file_and_one_list(
    s3_endpoint: str, tmp_path: Path
) -> None:
    store = _store(s3_endpoint)
    folder = tmp_path / "ckpt"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.bin", "sub/b.bin", "manifest.json"):
        (folder / name).write_bytes(os.urandom(1000))

    assert _requests(store, lambda: publish_dir(store, folder, "d/ckpt")) == ["PutObject"] * 3
    sent = _requests(store, lambda: download_dir(store, "d/ckpt", tmp_path / "back"))
    assert sorted(sent) == ["GetObject"] * 3 + ["ListObjectsV2"]
    for name in ("a.bin", "sub/b.bin", "manifest.json"):
        assert (tmp_path / "back" / name).read_bytes() == (folder / name).read_bytes()


def test_a_file_at_the_threshold_goes_in_parts_and_comes_back_whole(
    s3_endpoint: str, tmp_path: Path
) -> None:
    store = _store(s3_endpoint, multipart_threshold=PART, multipart_chunksize=PART)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(PART + 1024))  # two parts
    back = tmp_path / "back"

    sent = _requests(store, lambda: store.put_file("m/big", big))
    assert sent.count("UploadPart") == 2 and "CompleteMultipartUpload" in sent
    store.get_file("m/big", back)
    assert back.read_bytes() == big.read_bytes()


def test_an_empty_file_round_trips(s3_endpoint: str, tmp_path: Path) -> None:
    store = _store(s3_endpoint)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    store.put_file("e/empty", empty)
    store.get_file("e/empty", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == b""


def test_a_store_that_accepts_and_never_answers_fails_the_request(tmp_path: Path) -> None:
    """A silent endpoint (a hung proxy, a stopped MinIO behind a live load balancer) must fail
    the request after the read timeout, not hold the phase for botocore's minute per try."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []

    def accept_and_stay_silent() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            accepted.append(connection)

    threading.Thread(target=accept_and_stay_silent, daemon=True).start()
    store = S3Store(
        endpoint=f"http://127.0.0.1:{server.getsockname()[1]}",
        bucket="silent",
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        max_attempts=2,
        read_timeout=0.5,
    )
    (tmp_path / "small").write_bytes(b"x")
    try:
        with pytest.raises(ObjectStoreUnavailable) as failed:
            store.put_file("k/small", tmp_path / "small")
    finally:
        server.close()
        for connection in accepted:
            connection.close()
    assert "ReadTimeoutError" in failed.value.message
    assert len(accepted) == 2  # one connection per attempt


def test_the_timeouts_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator.settings import Settings
    from orchestrator.storage import make_store

    monkeypatch.setattr(S3Store, "ensure_bucket", lambda self: None)  # nothing listens there

    settings = Settings(
        s3_endpoint="http://127.0.0.1:9",
        s3_connect_timeout_seconds=2.5,
        s3_read_timeout_seconds=7.0,
    )
    config = make_store(settings).client.meta.config  # type: ignore[attr-defined]
    assert (config.connect_timeout, config.read_timeout) == (2.5, 7.0)
