"""Registered models: stored once under their content digest, described without loading
weights, and named by jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from orchestrator import storage
from orchestrator.base_models import resolve_base_model
from orchestrator.db import session_scope
from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.layout import model_file_key, model_prefix
from orchestrator.model_registry import add_model, inspect_model_dir, list_models, remove_model
from orchestrator.model_shapes import PROJECTIONS
from orchestrator.models import Dataset, Job, RegisteredModel, Tenant
from orchestrator.settings import get_settings


class CountingStore:
    """The test store, counting what is written through it."""

    def __init__(self) -> None:
        self.inner = storage.get_store()
        self.puts: list[str] = []

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def put_file(self, key: str, path: Path) -> None:
        self.puts.append(key)
        self.inner.put_file(key, path)


def _safetensors_elements(directory: Path) -> int:
    total = 0
    for shard in directory.glob("*.safetensors"):
        raw = shard.read_bytes()
        header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for d in tensor["shape"]:
                    count *= d
                total += count
    return total


def test_a_model_directory_is_described_without_loading_weights(tiny_model_dir: str) -> None:
    directory = Path(tiny_model_dir)
    files = inspect_model_dir(directory)
    assert files.architecture == "Qwen3VLForConditionalGeneration"
    assert files.dtype == "float32"
    assert files.parameter_count == _safetensors_elements(directory) > 0
    assert files.lora_target_modules == list(PROJECTIONS)
    assert {f["path"] for f in files.files} == {p.name for p in directory.iterdir() if p.is_file()}
    assert files.total_bytes == sum(p.stat().st_size for p in directory.iterdir() if p.is_file())
    assert files.processor is not None and "patch_size" in files.processor
    assert inspect_model_dir(directory).digest == files.digest  # content, not time, decides


def test_adding_stores_files_once_and_readding_uploads_nothing(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    store = CountingStore()
    with session_scope() as session:
        model, uploaded = add_model(session, store, "tiny-a", Path(tiny_model_dir))
        digest, count = model.digest, len(model.files)
    assert uploaded == count == len(store.puts)
    assert all(key.startswith(model_prefix(digest) + "/") for key in store.puts)
    for file in model.files:
        stored = store.inner.get_bytes(model_file_key(digest, file["path"]))
        assert stored == (Path(tiny_model_dir) / file["path"]).read_bytes()

    # the same files again, under the same name or from a copy under another: nothing goes up
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    store.puts.clear()
    with session_scope() as session:
        again, uploaded_again = add_model(session, store, "tiny-a", Path(tiny_model_dir))
        other, uploaded_other = add_model(session, store, "tiny-b", copy)
        assert (again.digest, other.digest) == (digest, digest)
    assert (uploaded_again, uploaded_other, store.puts) == (0, 0, [])

    with session_scope() as session:
        rows = {m.name: m.digest for m in list_models(session)}
    assert rows == {"tiny-a": digest, "tiny-b": digest}


def test_an_interrupted_add_resumes_with_the_missing_files(
    clean_db: None, tiny_model_dir: str
) -> None:
    store = CountingStore()
    files = inspect_model_dir(Path(tiny_model_dir))
    first = files.files[0]["path"]
    store.inner.put_file(model_file_key(files.digest, first), Path(tiny_model_dir) / first)
    with session_scope() as session:
        _, uploaded = add_model(session, store, "reg-tiny", Path(tiny_model_dir))
    assert uploaded == len(files.files) - 1
    assert model_file_key(files.digest, first) not in store.puts


def test_a_name_taken_by_other_files_is_refused(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model_dir, changed)
    (changed / "generation_config.json").write_text("{}")
    with session_scope() as session:
        add_model(session, storage.get_store(), "reg-tiny", Path(tiny_model_dir))
    with pytest.raises(Conflict) as refused, session_scope() as session:
        add_model(session, storage.get_store(), "reg-tiny", changed)
    assert refused.value.code == "model_exists"


@pytest.mark.parametrize("layout", ["no-config", "no-weights", "not-a-dir"])
def test_what_is_not_a_model_directory_is_refused(
    tiny_model_dir: str, tmp_path: Path, layout: str
) -> None:
    directory = tmp_path / "m"
    shutil.copytree(tiny_model_dir, directory)
    if layout == "no-config":
        (directory / "config.json").unlink()
    elif layout == "no-weights":
        for shard in directory.glob("*.safetensors"):
            shard.unlink()
    else:
        directory = directory / "config.json"
    with pytest.raises(InvalidRequest) as refused:
        inspect_model_dir(directory)
    assert refused.value.param == "from"
    assert str(directory) in refused.value.message


def _job_on(session: Session, base_model: str, status: str) -> None:
    tenant = Tenant(name=f"t-{status}")
    session.add(tenant)
    session.flush()
    dataset = Dataset(
        tenant_id=tenant.id,
        filename="d.zip",
        format="jsonl",
        sha256="0" * 64,
        storage_key="datasets/x/upload.zip",
        num_samples=1,
        num_images=1,
        bytes=1,
    )
    session.add(dataset)
    session.flush()
    session.add(
        Job(
            tenant_id=tenant.id,
            dataset_id=dataset.id,
            base_model=base_model,
            hyperparameters={},
            status=status,
        )
    )
    session.flush()


def test_remove_is_refused_while_an_unfinished_job_names_the_model(
    clean_db: None, tiny_model_dir: str
) -> None:
    store = storage.get_store()
    with session_scope() as session:
        model, _ = add_model(session, store, "reg-tiny", Path(tiny_model_dir))
        digest = model.digest
        _job_on(session, "reg-tiny", "running")
    with pytest.raises(Conflict) as refused, session_scope() as session:
        remove_model(session, store, "reg-tiny")
    assert refused.value.code == "model_in_use"
    with session_scope() as session:
        session.execute(Job.__table__.update().values(status="succeeded"))
    with session_scope() as session:
        remove_model(session, store, "reg-tiny")
    with session_scope() as session:
        assert session.scalars(select(RegisteredModel)).all() == []
    assert store.list(model_prefix(digest) + "/") == []
    with pytest.raises(NotFound), session_scope() as session:
        remove_model(session, store, "reg-tiny")


def test_removing_one_of_two_names_keeps_the_shared_files(
    clean_db: None, tiny_model_dir: str
) -> None:
    store = storage.get_store()
    with session_scope() as session:
        model, _ = add_model(session, store, "reg-a", Path(tiny_model_dir))
        add_model(session, store, "reg-b", Path(tiny_model_dir))
        digest, count = model.digest, len(model.files)
    with session_scope() as session:
        remove_model(session, store, "reg-a")
    assert len(store.list(model_prefix(digest) + "/")) == count


def test_a_registered_name_resolves_first_and_is_listed_when_unknown(
    clean_db: None, tiny_model_dir: str
) -> None:
    settings = get_settings()
    with session_scope() as session:
        model, _ = add_model(session, storage.get_store(), "team/vlm", Path(tiny_model_dir))
        known = resolve_base_model("team/vlm", settings, session)
        assert (known.name, known.location) == ("team/vlm", model_prefix(model.digest))
        assert known.config is not None and known.config["model_type"] == "qwen3_vl"
        with pytest.raises(InvalidRequest) as unknown:
            resolve_base_model("nope", settings, session)
    assert unknown.value.code == "unknown_model"
    assert "team/vlm" in unknown.value.message and "tiny-qwen3-vl" in unknown.value.message
    # without a session (a caller with no job store), the existing names still resolve
    assert resolve_base_model("tiny-qwen3-vl", settings).name == "tiny-qwen3-vl"


@pytest.mark.parametrize("name", ["tiny-qwen3-vl", "m"])
def test_a_name_the_server_already_knows_is_not_registered_with_other_files(
    clean_db: None, tiny_model_dir: str, tmp_path: Path, name: str
) -> None:
    """The default and an allowed name: a registered name never shadows them with other
    files, so workers resolve a name to the same model as submit did."""
    other = tmp_path / "other"
    shutil.copytree(tiny_model_dir, other)
    (other / "extra.json").write_text("{}")
    with pytest.raises(Conflict) as refused, session_scope() as session:
        add_model(session, storage.get_store(), name, other)
    assert (refused.value.code, refused.value.param) == ("model_exists", "name")
    with session_scope() as session:
        assert list_models(session) == []


def test_the_default_model_registers_under_its_name_with_its_own_files(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    """From the server's directory itself, or a copy of the same files: the name still means
    the same model everywhere."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_model_dir, copy)
    with session_scope() as session:
        model, _ = add_model(session, storage.get_store(), "tiny-qwen3-vl", Path(tiny_model_dir))
        again, uploaded = add_model(session, storage.get_store(), "tiny-qwen3-vl", copy)
        assert (again.id, uploaded) == (model.id, 0)


def test_unknown_model_lists_registered_names_before_the_servers_others(
    clean_db: None, tiny_model_dir: str
) -> None:
    with session_scope() as session:
        for name in ("zz/second", "zz/first"):  # sorted after every name of the server
            add_model(session, storage.get_store(), name, Path(tiny_model_dir))
        with pytest.raises(InvalidRequest) as unknown:
            resolve_base_model("nope", get_settings(), session)
    listed = unknown.value.message.split("known models: ", 1)[1].split(", ")
    assert listed[:2] == ["zz/first", "zz/second"]
    assert "tiny-qwen3-vl" in listed[2:]
