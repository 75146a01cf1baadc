"""Operator commands for registered models: add a model directory once, list, remove. They
talk to the job store and the object store directly, as the other operator commands do."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from services.cli.admin import _store, console


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    size = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


@click.group()
def models() -> None:
    """Register base models that jobs name (`base_model`), list and remove them."""


@models.command("add")
@click.argument("name")
@click.option(
    "--from",
    "directory",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A Hugging Face model directory: config.json, processor files, safetensors shards.",
)
@click.option(
    "--from-hub",
    "hub_id",
    metavar="ID",
    help="A Hugging Face Hub model id (e.g. Qwen/Qwen3-VL-2B-Instruct), fetched through the "
    "local Hugging Face cache: configs, processor, tokenizer and safetensors files only.",
)
@click.option("--revision", help="With --from-hub: a branch, tag or commit (default: main).")
def models_add(name: str, directory: Path | None, hub_id: str | None, revision: str | None) -> None:
    """Store a model's files once in the object store and register them as NAME. Files
    already stored are not uploaded again. Give exactly one of --from and --from-hub."""
    if (directory is None) == (hub_id is None):
        raise click.UsageError("give exactly one of --from DIR and --from-hub ID")
    if revision is not None and hub_id is None:
        raise click.UsageError("--revision goes with --from-hub")
    if directory is not None:
        _add(name, directory)
        return
    from services.cli.hub import model_dir_from_hub

    assert hub_id is not None
    with model_dir_from_hub(hub_id, revision) as fetched:
        _add(name, fetched)


def _add(name: str, directory: Path) -> None:
    from orchestrator.model_registry import add_model
    from orchestrator.storage import get_store

    with _store() as session:
        model, uploaded = add_model(session, get_store(), name, directory)
        console.print(
            f"registered {model.name}: {model.architecture}, {model.parameter_count:,} "
            f"parameters, {model.dtype}, {_size(model.total_bytes)} in {len(model.files)} "
            f"files ({uploaded} uploaded, {len(model.files) - uploaded} already stored)"
        )


@models.command("list")
def models_list() -> None:
    """Every registered model."""
    from orchestrator.model_registry import list_models

    table = Table(title="models")
    for column in ("name", "architecture", "parameters", "dtype", "size", "LoRA targets"):
        table.add_column(column)
    with _store() as session:
        for m in list_models(session):
            table.add_row(
                m.name,
                m.architecture,
                f"{m.parameter_count:,}",
                m.dtype,
                _size(m.total_bytes),
                ",".join(m.lora_target_modules) or "-",
            )
    console.print(table)


@models.command("remove")
@click.argument("name")
def models_remove(name: str) -> None:
    """Unregister NAME; refused while an unfinished job trains on it."""
    from orchestrator.model_registry import remove_model
    from orchestrator.storage import get_store

    with _store() as session:
        remove_model(session, get_store(), name)
    console.print(f"removed {name}")
