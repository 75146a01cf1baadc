"""Builders for test inputs: data set zips and API clients."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

from PIL import Image

from orchestrator.auth import create_api_key
from orchestrator.db import session_scope
from services.cli.client import zip_folder

__all__ = ["dataset_zip", "new_api_key", "png_bytes", "zip_folder"]


def png_bytes(color: tuple[int, int, int] = (20, 120, 40), size: int = 64) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


def dataset_zip(
    annotations: Any = None,
    images: dict[str, bytes] | None = None,
    *,
    folder: str = "",
    raw_annotations: bytes | None = None,
) -> bytes:
    """A zip in the bundled example's layout; every part can be replaced to build a broken one."""
    if annotations is None:
        annotations = {
            f"case{i}.png": {"question": "Which part is abnormal?", "answer": f"capacitor {i}"}
            for i in range(1, 4)
        }
    if images is None:
        images = {name: png_bytes() for name in annotations}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        if raw_annotations is not None:
            archive.writestr(f"{folder}annotations.json", raw_annotations)
        elif annotations is not False:
            archive.writestr(f"{folder}annotations.json", json.dumps(annotations))
        for name, data in images.items():
            archive.writestr(f"{folder}images/{name}", data)
    return buffer.getvalue()


def new_api_key(tenant: str = "acme", *, admin: bool = False) -> str:
    with session_scope() as session:
        return create_api_key(session, tenant, admin=admin)
