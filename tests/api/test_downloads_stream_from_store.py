"""Downloads go out as they are read from the object store: a merged model's zip and a file's
content are never copied to a temporary file on the API host first."""

from __future__ import annotations

import io
import os
import tempfile
import zipfile

import pytest
from fastapi.testclient import TestClient

from orchestrator.storage import ObjectStore, get_store
from services.api.downloads import CHUNK_BYTES, stream_zip
from tests.api.openai_helpers import openai_client
from tests.factories import dataset_zip


def _refuse_local_copies(monkeypatch: pytest.MonkeyPatch, store: ObjectStore) -> None:
    """From here on, copying an object to a local file or making a temporary file or folder
    fails the test."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("a download copied an object to a temporary file")

    monkeypatch.setattr(store, "get_file", refuse)
    for name in (
        "TemporaryDirectory",
        "NamedTemporaryFile",
        "TemporaryFile",
        "SpooledTemporaryFile",
        "mkstemp",
        "mkdtemp",
    ):
        monkeypatch.setattr(tempfile, name, refuse)


def test_a_merged_zip_is_read_from_the_store_as_it_goes_out(
    clean_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = get_store()  # the tests' S3 store
    files = {"model.safetensors": os.urandom(2 * CHUNK_BYTES + 7), "config.json": b"{}"}
    for name, data in files.items():
        store.put_bytes(f"export/merged/{name}", data)
    keys = store.list("export/merged/")
    _refuse_local_copies(monkeypatch, store)

    body = b"".join(stream_zip(store, "export/merged/", keys))

    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert {name: archive.read(name) for name in archive.namelist()} == files


def test_a_files_content_is_read_from_the_store_with_its_length(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = openai_client(client)
    uploaded = dataset_zip()
    file_id = api.files.create(file=("boards.zip", uploaded), purpose="fine-tune").id
    _refuse_local_copies(monkeypatch, get_store())  # after the upload, which may spool to disk

    content = api.files.content(file_id)

    assert content.content == uploaded
    assert content.response.headers["content-length"] == str(len(uploaded))
