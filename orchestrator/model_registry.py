"""Base models as registered artifacts: a Hugging Face model directory stored once in the
object store under its content digest, and recorded in SQL under the name jobs give.

What can be known about a model is read without loading weights: the architecture and dtype
from config.json, the parameter count from the safetensors headers, the LoRA targets from the
model type. Each file goes up only when its key is missing, so re-adding the same files
uploads nothing and an interrupted add resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator.base_models import image_processor_settings, read_json
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.layout import model_file_key, model_prefix
from orchestrator.lifecycle import TERMINAL_JOB
from orchestrator.model_shapes import PROJECTIONS
from orchestrator.models import Job, RegisteredModel
from orchestrator.storage import ObjectStore, delete_prefix

MAX_NAME_LENGTH = 200  # models.name's column
# Decoders whose LoRA-able linear layers are the Qwen/Llama projections.
PROJECTION_MODEL_TYPES = frozenset(
    {"qwen3_vl", "qwen2_5_vl", "qwen2_vl", "qwen3", "qwen2", "llama", "mistral"}
)
_HASH_BLOCK = 8 * 1024 * 1024
# The safetensors header: an 8-byte little-endian length, then that much JSON.
_MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True)
class ModelFiles:
    """What a model directory holds, as recorded: nothing here needs the weights loaded."""

    digest: str
    files: list[dict[str, Any]]  # [{"path", "sha256", "bytes"}], sorted by path
    total_bytes: int
    architecture: str
    parameter_count: int
    dtype: str
    lora_target_modules: list[str]
    config: dict[str, Any]
    processor: dict[str, Any] | None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _safetensors_parameters(path: Path) -> int:
    """The tensors' element count, from the file's header alone."""
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise InvalidRequest(f"{path.name} is not a safetensors file", param="from")
        (length,) = struct.unpack("<Q", raw)
        if length > _MAX_HEADER:
            raise InvalidRequest(f"{path.name} has no readable safetensors header", param="from")
        try:
            header = json.loads(f.read(length))
        except ValueError as exc:
            raise InvalidRequest(
                f"{path.name} has no readable safetensors header", param="from"
            ) from exc
    return sum(
        math.prod(tensor.get("shape", []))
        for key, tensor in header.items()
        if key != "__metadata__" and isinstance(tensor, dict)
    )


def _dtype(config: dict[str, Any]) -> str:
    text = config.get("text_config")
    for source in (config, text if isinstance(text, dict) else {}):
        for field in ("dtype", "torch_dtype"):
            if isinstance(source.get(field), str):
                return str(source[field])
    return "unknown"


def lora_target_modules(config: dict[str, Any]) -> list[str]:
    """The linear layers LoRA can target, by model type; empty when relaytune does not know
    the architecture (the worker then checks a job's targets against the loaded model)."""
    return list(PROJECTIONS) if config.get("model_type") in PROJECTION_MODEL_TYPES else []


def inspect_model_dir(directory: Path) -> ModelFiles:
    """Hash every file and read what the configs and safetensors headers say."""
    if not directory.is_dir():
        raise InvalidRequest(f"{directory} is not a directory", param="from")
    config = read_json(directory / "config.json")
    if config is None:
        raise InvalidRequest(f"{directory} has no readable config.json", param="from")
    paths = sorted(p for p in directory.rglob("*") if p.is_file() and ".cache" not in p.parts)
    shards = [p for p in paths if p.suffix == ".safetensors"]
    if not shards:
        raise InvalidRequest(f"{directory} holds no .safetensors weights", param="from")
    files: list[dict[str, Any]] = [
        {
            "path": p.relative_to(directory).as_posix(),
            "sha256": file_sha256(p),
            "bytes": p.stat().st_size,
        }
        for p in paths
    ]
    listing = "\n".join(f"{f['path']}\0{f['sha256']}" for f in files)
    architectures = config.get("architectures")
    return ModelFiles(
        digest=hashlib.sha256(listing.encode()).hexdigest(),
        files=files,
        total_bytes=sum(f["bytes"] for f in files),
        architecture=str(architectures[0])
        if isinstance(architectures, list) and architectures
        else str(config.get("model_type", "unknown")),
        parameter_count=sum(_safetensors_parameters(p) for p in shards),
        dtype=_dtype(config),
        lora_target_modules=lora_target_modules(config),
        config=config,
        processor=image_processor_settings(directory),
    )


def upload_model_files(store: ObjectStore, directory: Path, model: ModelFiles) -> int:
    """Upload the files whose keys are missing (S3: boto3's multipart transfer manager);
    returns how many went up."""
    uploaded = 0
    for file in model.files:
        key = model_file_key(model.digest, file["path"])
        if store.exists(key):
            continue
        store.put_file(key, directory / file["path"])
        uploaded += 1
    return uploaded


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name or any(c.isspace() for c in name):
        raise InvalidRequest(
            f"a model name is 1 to {MAX_NAME_LENGTH} characters without spaces, got {name[:80]!r}",
            param="name",
        )
    return name


def _refuse_a_name_the_server_knows(name: str, directory: Path, files: ModelFiles) -> None:
    """A registered name never shadows the default, a model-root directory or an allowed
    name with other files, so a name means the same model wherever it is resolved (workers
    look the job store up only for names they do not know otherwise). The server's own
    directory may be registered under its own name (as `relaytune up` does with the tiny
    default): both then stand for the same files."""
    from orchestrator.base_models import resolve_base_model
    from orchestrator.settings import get_settings

    try:
        known = resolve_base_model(name, get_settings())
    except InvalidRequest:
        return
    if _holds_the_same_files(Path(known.location), directory, files):
        return
    raise Conflict(
        f"'{name}' already names a model of the server (its default, a directory under its "
        "model root or an allowed name) with other files; choose another name",
        param="name",
        code="model_exists",
    )


def _holds_the_same_files(location: Path, directory: Path, files: ModelFiles) -> bool:
    if not location.is_dir():  # a hub id, or the tiny default not written yet
        return False
    if location.resolve() == directory.resolve():
        return True
    try:
        return inspect_model_dir(location).digest == files.digest
    except InvalidRequest:  # not a model directory
        return False


def find_model(session: Session, name: str) -> RegisteredModel | None:
    return session.scalar(select(RegisteredModel).where(RegisteredModel.name == name))


def add_model(
    session: Session, store: ObjectStore, name: str, directory: Path
) -> tuple[RegisteredModel, int]:
    """Register `directory` as `name`; returns the row and how many files were uploaded.
    Adding the same files under the same name again changes nothing."""
    name = check_name(name)
    files = inspect_model_dir(directory)
    _refuse_a_name_the_server_knows(name, directory, files)
    existing = find_model(session, name)
    if existing is not None and existing.digest != files.digest:
        raise Conflict(
            f"model '{name}' is already registered with other files; remove it first",
            param="name",
            code="model_exists",
        )
    uploaded = upload_model_files(store, directory, files)
    if existing is not None:
        return existing, uploaded
    row = RegisteredModel(
        name=name,
        digest=files.digest,
        architecture=files.architecture,
        parameter_count=files.parameter_count,
        dtype=files.dtype,
        total_bytes=files.total_bytes,
        files=files.files,
        lora_target_modules=files.lora_target_modules,
        config=files.config,
        processor=files.processor,
    )
    session.add(row)
    session.flush()
    return row, uploaded


def list_models(session: Session) -> list[RegisteredModel]:
    return list(session.scalars(select(RegisteredModel).order_by(RegisteredModel.name)))


def remove_model(session: Session, store: ObjectStore, name: str) -> None:
    """Unregister a model no unfinished job names; its files go when no other name shares
    them."""
    model = find_model(session, name)
    if model is None:
        raise NotFound(f"no registered model '{name[:200]}'", param="name", code="unknown_model")
    running = session.scalars(
        select(Job.id).where(Job.base_model == name, Job.status.not_in(list(TERMINAL_JOB)))
    ).all()
    if running:
        raise Conflict(
            f"model '{name}' is the base of {len(running)} unfinished job(s) "
            f"({', '.join(running[:5])}); cancel them or wait for them to end",
            param="name",
            code="model_in_use",
        )
    digest = model.digest
    session.delete(model)
    session.flush()
    shared = session.scalar(select(RegisteredModel.id).where(RegisteredModel.digest == digest))
    if shared is None:
        delete_prefix(store, model_prefix(digest))
