"""Zips of stored directories for GET /v1/jobs/{id}/adapter.

An adapter is tens of megabytes at most and is zipped in memory. A merged model is the size of
its base (16 GB for an 8B model in bf16), so its zip is streamed: written into an unseekable
sink and handed on piece by piece, zipfile putting each member's sizes in a data descriptor
after its bytes instead of seeking back. Its members are stored, not deflated: safetensors
weights barely compress, and deflating gigabytes would hold the response for minutes. Each
member is read from the store as it goes out: nothing is written to disk, the memory holds one
chunk, and the first bytes leave before the first object has been read whole.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator, Sequence
from enum import StrEnum

from fastapi.responses import Response, StreamingResponse

from orchestrator import layout
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.models import Checkpoint
from orchestrator.storage import ObjectStore

CHUNK_BYTES = 1 << 20


class DownloadKind(StrEnum):
    ADAPTER = "adapter"  # the LoRA adapter, PEFT format
    MERGED = "merged"  # the base with the adapter folded in (hyperparameter export_merged)


def checkpoint_adapter(rows: Sequence[Checkpoint], job_id: str, checkpoint_id: str) -> str:
    """Where the adapter of the job's checkpoint `checkpoint_id` (one of `rows`) is stored."""
    found = next((c for c in rows if c.id == checkpoint_id), None)
    if found is None:
        raise NotFound(f"job {job_id} has no checkpoint {checkpoint_id}", param="checkpoint")
    if found.kind == layout.CheckpointKind.ARTIFACT:
        raise InvalidRequest(
            f"checkpoint {checkpoint_id} is the preprocess phase's artifact and holds no adapter",
            param="checkpoint",
        )
    return layout.adapter_prefix(found.key)


def adapter_zip(
    store: ObjectStore, adapter: str, filename: str, *, if_gone: NotFound | None = None
) -> Response:
    """The adapter directory stored at `adapter`, zipped in memory; `if_gone` is raised when
    nothing is stored there (a checkpoint pruned since its row was read)."""
    prefix = layout.listing_prefix(adapter)
    keys = store.list(prefix)
    if not keys and if_gone is not None:
        raise if_gone
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for key in keys:
            archive.writestr(key[len(prefix) :], store.get_bytes(key))
    return Response(buffer.getvalue(), media_type="application/zip", headers=attachment(filename))


def merged_zip(store: ObjectStore, export: str, job_id: str) -> StreamingResponse:
    """The merged model of the job's export, streamed."""
    prefix = layout.listing_prefix(layout.merged_prefix(export))
    keys = store.list(prefix)
    if not keys:
        raise Conflict(
            f"job {job_id} exported no merged model: it was submitted without "
            "hyperparameters.export_merged = true",
            param="kind",
            code="merged_not_exported",
        )
    return StreamingResponse(
        stream_zip(store, prefix, keys),
        media_type="application/zip",
        headers=attachment(f"relaytune-{job_id}-merged.zip"),
    )


def attachment(filename: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{filename}"'}


class _Sink:
    """A write-only, unseekable file whose bytes are taken out as they arrive."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> Iterator[bytes]:
        """What was written since the last take, as one piece (none when nothing was)."""
        data, self._parts = b"".join(self._parts), []
        if data:
            yield data


def stream_zip(store: ObjectStore, prefix: str, keys: list[str]) -> Iterator[bytes]:
    """The zip of `keys` (all under `prefix`, named relative to it), in pieces of about
    CHUNK_BYTES."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:  # type: ignore[call-overload]
        for key in keys:
            # force_zip64: zipfile writes the header before it knows the member's size.
            with (
                store.open_read(key) as source,
                archive.open(key[len(prefix) :], "w", force_zip64=True) as member,
            ):
                while chunk := source.read(CHUNK_BYTES):
                    member.write(chunk)
                    yield from sink.take()
    yield from sink.take()  # the central directory, written when the archive closes
