"""OpenAI's Files API for fine-tuning: a file is a relaytune data set, under the same id."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse

from orchestrator import idempotency
from orchestrator.datasets import (
    dataset_of_tenant,
    datasets_after,
    delete_dataset,
    stored_filename,
)
from orchestrator.errors import InvalidRequest, NotFound
from orchestrator.storage import ObjectReader, ObjectStore
from services.api.deps import CurrentTenant, SessionDep, SettingsDep, StoreDep
from services.api.downloads import CHUNK_BYTES
from services.api.idempotent import IdempotencyKeyHeader, once_per_key
from services.api.openai_presenters import file_object
from services.api.openai_schemas import FileDeleted, FileList, FileObject
from services.api.routes.datasets import dataset_from_upload

router = APIRouter(prefix="/v1/files", tags=["openai"])

PURPOSE = "fine-tune"


@router.post("", response_model=FileObject)
def create_file(
    file: UploadFile,
    purpose: Annotated[str, Form()],
    session: SessionDep,
    tenant: CurrentTenant,
    settings: SettingsDep,
    store: StoreDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> FileObject | JSONResponse:
    """Upload training data (purpose fine-tune): an OpenAI chat .jsonl with images as base64
    data URLs, or a zip in any format POST /v1/datasets takes. It becomes a data set."""
    if purpose != PURPOSE:
        raise InvalidRequest(
            f"purpose must be {PURPOSE}, not '{purpose}'",
            param="purpose",
            code="unsupported_purpose",
        )

    def create() -> FileObject:
        return file_object(dataset_from_upload(file, session, tenant.id, settings, store))

    return once_per_key(
        session,
        tenant_id=tenant.id,
        route="POST /v1/files",
        key=idempotency_key,
        request_hash=lambda: idempotency.hash_upload(file.file, file.filename or ""),
        status_code=200,
        create=create,
    )


@router.get("", response_model=FileList)
def list_files(
    session: SessionDep,
    tenant: CurrentTenant,
    purpose: str | None = None,
    after: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    order: Literal["asc", "desc"] = "desc",
) -> FileList:
    """This tenant's files (data sets), by creation time; `after` is the last id seen."""
    if purpose not in (None, PURPOSE):
        return FileList(data=[], has_more=False, first_id=None, last_id=None)
    rows = datasets_after(
        session, tenant.id, after=after, limit=limit + 1, newest_first=order == "desc"
    )
    data = [file_object(d) for d in rows[:limit]]
    return FileList(
        data=data,
        has_more=len(rows) > limit,
        first_id=data[0].id if data else None,
        last_id=data[-1].id if data else None,
    )


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, session: SessionDep, tenant: CurrentTenant) -> FileObject:
    """One file."""
    return file_object(dataset_of_tenant(session, tenant.id, file_id, param="file_id"))


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
def download_file_content(
    file_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep
) -> StreamingResponse:
    """The file's bytes as stored, streamed; always a zip (application/zip). A zip upload comes
    back byte for byte under its own name. A .jsonl upload was stored as its zip equivalent
    (the .jsonl, each data-URL image a file under images/) and comes back as that zip, named
    after the upload with .zip added: train.jsonl -> train.jsonl.zip."""
    dataset = dataset_of_tenant(session, tenant.id, file_id, param="file_id")
    # A delete that commits after the row was read takes the object: the same 404.
    gone = NotFound(f"dataset {file_id} not found", param="file_id")
    source = _opened(store, dataset.storage_key, if_gone=gone)
    headers = _attachment(stored_filename(dataset))
    headers["Content-Length"] = str(source.size)
    return StreamingResponse(_chunks(source), media_type="application/zip", headers=headers)


@router.delete("/{file_id}", response_model=FileDeleted)
def remove_file(
    file_id: str, session: SessionDep, tenant: CurrentTenant, store: StoreDep
) -> FileDeleted:
    """Delete a file; refused (409) while an unfinished job trains on it."""
    delete_dataset(session, store, tenant.id, file_id)
    return FileDeleted(id=file_id, deleted=True)


def _opened(store: ObjectStore, key: str, *, if_gone: NotFound) -> ObjectReader:
    """The object at `key`, opened for reading as it goes out: nothing is copied to disk, and
    its size (for Content-Length) comes with the opening, not from a read of its bytes."""
    try:
        return store.open_read(key)
    except FileNotFoundError:
        raise if_gone from None


def _chunks(source: ObjectReader) -> Iterator[bytes]:
    with source:
        while chunk := source.read(CHUNK_BYTES):
            yield chunk


def _attachment(filename: str) -> dict[str, str]:
    """Content-Disposition for a name the tenant chose: header values are Latin-1, and a quote
    or a line break would end the value early, so `filename` is an ASCII stand-in and
    `filename*` (RFC 6266) carries the exact name as UTF-8 when the two differ."""
    plain = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    value = f'attachment; filename="{plain}"'
    if plain != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return {"Content-Disposition": value}
