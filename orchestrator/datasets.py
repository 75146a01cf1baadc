"""Data sets: an upload is checked (orchestrator.dataset_archive), then stored, the object
first and then the row, so no row points at nothing. Deleting goes the other way: the row
first, then the object once that commits.

A `.jsonl` upload (OpenAI's chat format) is stored as its zip equivalent
(orchestrator.dataformats.jsonl_upload), and handed back as that zip. A deleted data set
that jobs still name keeps its row, without an object (`storage_key` empty), so those jobs keep
their record; it is listed and found nowhere else. Each job runs from its own copy of the data,
taken at submit.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Sequence
from typing import Any

from sqlalchemy import event, func, or_, select
from sqlalchemy.orm import Session

from orchestrator.dataformats.jsonl_upload import is_jsonl_upload, jsonl_to_zip
from orchestrator.dataset_archive import validate_dataset_zip
from orchestrator.errors import Conflict, InvalidDataset, NotFound, RequestTooLarge
from orchestrator.layout import upload_key
from orchestrator.lifecycle import TERMINAL_JOB
from orchestrator.models import Dataset, Job, new_id
from orchestrator.settings import Settings
from orchestrator.storage import ObjectStore, delete_prefix
from orchestrator.zip_limits import ZipLimits

DELETED = ""  # the storage_key of a deleted data set whose row jobs still name


def create_dataset(
    session: Session,
    store: ObjectStore,
    settings: Settings,
    *,
    tenant_id: str,
    filename: str,
    data: bytes,
) -> Dataset:
    if not data:
        raise InvalidDataset("the uploaded file is empty", param="file")
    if len(data) > settings.max_upload_bytes:
        raise RequestTooLarge(
            f"the upload has {len(data)} bytes; the limit is {settings.max_upload_bytes}",
            param="file",
        )
    limits = ZipLimits.from_settings(settings)
    if is_jsonl_upload(filename, data):
        data = jsonl_to_zip(filename, data, limits)
    summary = validate_dataset_zip(
        data,
        max_pixels=settings.max_image_pixels,
        max_images=settings.max_images,
        limits=limits,
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


def _live(tenant_id: str) -> Any:
    return select(Dataset).where(Dataset.tenant_id == tenant_id, Dataset.storage_key != DELETED)


def list_datasets(
    session: Session, tenant_id: str, *, limit: int, offset: int
) -> tuple[Sequence[Dataset], int]:
    """This tenant's data sets, newest first, and how many there are."""
    query = _live(tenant_id)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(
        query.order_by(Dataset.created_at.desc(), Dataset.id).limit(limit).offset(offset)
    ).all()
    return rows, total


def datasets_after(
    session: Session, tenant_id: str, *, after: str | None, limit: int, newest_first: bool
) -> Sequence[Dataset]:
    """Up to `limit` data sets following the one named `after` (a cursor), in created order."""
    query = _live(tenant_id)
    if newest_first:
        order = (Dataset.created_at.desc(), Dataset.id.desc())
    else:
        order = (Dataset.created_at.asc(), Dataset.id.asc())
    if after is not None:
        cursor = dataset_of_tenant(session, tenant_id, after, param="after")
        if newest_first:
            query = query.where(
                (Dataset.created_at < cursor.created_at)
                | ((Dataset.created_at == cursor.created_at) & (Dataset.id < cursor.id))
            )
        else:
            query = query.where(
                (Dataset.created_at > cursor.created_at)
                | ((Dataset.created_at == cursor.created_at) & (Dataset.id > cursor.id))
            )
    return session.scalars(query.order_by(*order).limit(limit)).all()


def dataset_of_tenant(
    session: Session, tenant_id: str, dataset_id: str, *, param: str = "dataset_id"
) -> Dataset:
    dataset = session.get(Dataset, dataset_id)
    if dataset is None or dataset.tenant_id != tenant_id or dataset.storage_key == DELETED:
        raise NotFound(f"dataset {dataset_id} not found", param=param)
    return dataset


def stored_filename(dataset: Dataset) -> str:
    """What the stored object is called when it is handed back. Every data set is stored as a
    zip, a `.jsonl` upload as its zip equivalent, so a name that does not end in .zip gets it
    added (train.jsonl -> train.jsonl.zip) and nobody opens a zip as JSONL; a zip keeps the
    uploaded name. Only the base name: the upload's name may carry the sender's folders."""
    base = posixpath.basename(dataset.filename.replace("\\", "/")) or "dataset"
    return base if base.lower().endswith(".zip") else f"{base}.zip"


def delete_dataset(session: Session, store: ObjectStore, tenant_id: str, dataset_id: str) -> None:
    """Refused while an unfinished job uses the data set, to train or to validate on; its
    object goes once the row has."""
    dataset = dataset_of_tenant(session, tenant_id, dataset_id)
    users = session.execute(
        select(Job.id, Job.status).where(
            or_(Job.dataset_id == dataset.id, Job.validation_dataset_id == dataset.id)
        )
    ).all()
    busy = sorted(job_id for job_id, status in users if status not in TERMINAL_JOB)
    if busy:
        raise Conflict(
            f"dataset {dataset_id} is used by unfinished job(s) {', '.join(busy)}; "
            "cancel them or wait until they finish",
            param="dataset_id",
            code="dataset_in_use",
        )
    prefix = posixpath.dirname(upload_key(dataset.id))  # the upload and anything beside it
    if users:
        dataset.storage_key = DELETED
    else:
        session.delete(dataset)
    session.flush()
    event.listen(session, "after_commit", lambda _: delete_prefix(store, prefix), once=True)
