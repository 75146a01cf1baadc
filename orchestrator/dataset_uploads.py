"""Storing a validated upload: the object first, then the row, so no row points at nothing."""

from __future__ import annotations

import hashlib

from sqlalchemy.orm import Session

from orchestrator.datasets import validate_dataset_zip
from orchestrator.errors import InvalidDataset
from orchestrator.models import Dataset, new_id
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore


def create_dataset(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    *,
    tenant_id: str,
    filename: str,
    data: bytes,
) -> Dataset:
    if len(data) > settings.max_upload_bytes:
        raise InvalidDataset(
            f"the upload has {len(data)} bytes; the limit is {settings.max_upload_bytes}",
            param="file",
            code="too_large",
        )
    summary = validate_dataset_zip(
        data, max_pixels=settings.max_image_pixels, max_images=settings.max_images
    )
    dataset_id = new_id()
    key = f"datasets/{dataset_id}/upload.zip"
    store.put_bytes(key, data)
    dataset = Dataset(
        id=dataset_id,
        tenant_id=tenant_id,
        filename=filename,
        format=summary.format,
        num_samples=summary.num_samples,
        num_images=summary.num_images,
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        storage_key=key,
    )
    session.add(dataset)
    try:
        session.flush()
    except Exception:
        store.delete(key)  # the row failed: leave no orphan object behind
        raise
    return dataset
