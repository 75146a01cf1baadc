"""Data sets: an upload is checked (orchestrator.dataset_archive), then stored, the object
first and then the row, so no row points at nothing."""

from __future__ import annotations

import hashlib

from sqlalchemy import event
from sqlalchemy.orm import Session

from orchestrator.dataset_archive import validate_dataset_zip
from orchestrator.errors import RequestTooLarge
from orchestrator.layout import upload_key
from orchestrator.models import Dataset, new_id
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore
from orchestrator.zip_limits import ZipLimits


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
        raise RequestTooLarge(
            f"the upload has {len(data)} bytes; the limit is {settings.max_upload_bytes}",
            param="file",
        )
    summary = validate_dataset_zip(
        data,
        max_pixels=settings.max_image_pixels,
        max_images=settings.max_images,
        limits=ZipLimits.from_settings(settings),
    )
    dataset_id = new_id()
    key = upload_key(dataset_id)
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
    _delete_unless_committed(session, store, key)
    session.add(dataset)
    session.flush()
    return dataset


def _delete_unless_committed(session: Session, store: ObjectStore, key: str) -> None:
    """The object is stored before its row commits: a transaction that rolls back instead (a
    failed flush, a failed commit) takes the object with it, so no object is left orphaned."""
    committed = False

    def kept(_: Session) -> None:
        nonlocal committed
        committed = True

    def undo(_: Session) -> None:
        if not committed:
            store.delete(key)

    event.listen(session, "after_commit", kept, once=True)
    event.listen(session, "after_rollback", undo, once=True)
