"""A merged model's zip is streamed in pieces, never built whole."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

from orchestrator.storage import LocalStore
from services.api.downloads import CHUNK_BYTES, stream_zip


def test_the_zip_comes_in_pieces_and_holds_every_file_unchanged(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    files = {"model.safetensors": os.urandom(3 * CHUNK_BYTES + 5), "config.json": b"{}"}
    for name, data in files.items():
        store.put_bytes(f"export/merged/{name}", data)
    keys = store.list("export/merged/")

    pieces = list(stream_zip(store, "export/merged/", keys))

    assert len(pieces) > 3
    assert max(len(p) for p in pieces) < 2 * CHUNK_BYTES
    with zipfile.ZipFile(io.BytesIO(b"".join(pieces))) as archive:
        assert {name: archive.read(name) for name in archive.namelist()} == files
