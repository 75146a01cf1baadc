"""Request bodies are judged at the door: an unknown sender or an oversized body is refused before
the body is read, and a body that streams past its limit is cut off at the limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from orchestrator.settings import get_settings
from services.api.main import create_app
from tests.factories import dataset_zip, new_api_key

CHUNK = 64 * 1024
BOUNDARY = "relaytune-test-boundary"


@dataclass
class Exchange:
    """One request driven straight through the ASGI app, counting the body chunks it pulled."""

    status: int = 0
    body: bytes = b""
    chunks_read: int = 0
    bytes_read: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def error(self) -> dict[str, Any]:
        return dict(json.loads(self.body)["error"])


def _drive(
    path: str,
    chunks: int,
    *,
    key: str | None,
    content_length: int | None,
    content_type: str = f"multipart/form-data; boundary={BOUNDARY}",
) -> Exchange:
    """POST `chunks` chunks of CHUNK bytes (a multipart upload) to `path`."""
    headers = [(b"content-type", content_type.encode())]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    if content_length is not None:
        headers.append((b"content-length", str(content_length).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="d.zip"\r\nContent-Type: application/zip\r\n\r\n'
    ).encode()
    exchange = Exchange()

    async def receive() -> dict[str, Any]:
        if exchange.chunks_read >= chunks:
            return {"type": "http.disconnect"}
        exchange.chunks_read += 1
        body = head + b"\0" * (CHUNK - len(head)) if exchange.chunks_read == 1 else b"\0" * CHUNK
        exchange.bytes_read += len(body)
        return {"type": "http.request", "body": body, "more_body": exchange.chunks_read < chunks}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")

    asyncio.run(create_app()(scope, receive, send))
    return exchange


@pytest.fixture
def api_key(clean_db: None) -> str:
    return new_api_key()


@pytest.fixture
def small_upload_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    limit = 4 * CHUNK
    monkeypatch.setattr(get_settings(), "max_upload_bytes", limit)
    return limit


def test_upload_without_a_key_is_refused_before_its_body_is_read(clean_db: None) -> None:
    huge = 1536 * 1024 * 1024  # declared 1.5 GB; the sender would stream it all
    for key in (None, "rt_unknown"):
        exchange = _drive("/v1/datasets", 50, key=key, content_length=huge)
        assert exchange.status == 401, exchange.body
        assert exchange.error["param"] == "Authorization"
        assert exchange.chunks_read == 0


def test_upload_declared_over_the_limit_is_refused_before_its_body_is_read(
    api_key: str,
    small_upload_limit: int,
) -> None:
    exchange = _drive("/v1/datasets", 50, key=api_key, content_length=small_upload_limit + 1)
    assert exchange.status == 413, exchange.body
    assert exchange.error["code"] == "request_too_large"
    assert str(small_upload_limit) in exchange.error["message"]
    assert exchange.chunks_read == 0


def test_streamed_upload_is_cut_off_at_the_limit(api_key: str, small_upload_limit: int) -> None:
    # No Content-Length (chunked transfer): the bytes are counted as they arrive.
    exchange = _drive("/v1/datasets", 50, key=api_key, content_length=None)
    assert exchange.status == 413, exchange.body
    assert exchange.error["code"] == "request_too_large"
    assert str(small_upload_limit) in exchange.error["message"]
    assert exchange.bytes_read <= small_upload_limit + CHUNK


def test_upload_just_over_the_limit_gets_413_through_http(
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = dataset_zip()
    monkeypatch.setattr(get_settings(), "max_upload_bytes", len(data))  # multipart adds more
    response = client.post("/v1/datasets", files={"file": ("d.zip", data)})
    assert response.status_code == 413, response.text
    assert f"{len(data)} bytes" in response.json()["error"]["message"]


def test_json_body_over_a_megabyte_is_refused(client: TestClient, dataset_id: str) -> None:
    limit = get_settings().max_json_body_bytes
    body = {"dataset_id": dataset_id, "metadata": {"note": "x" * limit}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 413, response.text
    assert str(limit) in response.json()["error"]["message"]


def test_json_body_streamed_over_the_limit_is_cut_off(api_key: str) -> None:
    chunks = get_settings().max_json_body_bytes // CHUNK + 8
    exchange = _drive(
        "/v1/jobs", chunks, key=api_key, content_length=None, content_type="application/json"
    )
    assert exchange.status == 413, exchange.body
    assert exchange.chunks_read < chunks


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"note": "v" * 513},
        {"nested": {}},
        {"n": 1},
    ],
    ids=["17-keys", "long-key", "long-value", "object-value", "number-value"],
)
def test_metadata_is_bounded_like_openai(
    client: TestClient, dataset_id: str, metadata: dict[str, Any]
) -> None:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "metadata": metadata})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["param"].startswith("metadata")


def test_metadata_within_the_bounds_is_kept(client: TestClient, dataset_id: str) -> None:
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, "metadata": metadata})
    assert response.status_code == 201, response.text
    assert response.json()["metadata"] == metadata
