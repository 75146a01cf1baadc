"""`relaytune datasets`: upload a folder, a zip or a .jsonl; list; delete."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from services.cli.client import Client
from services.cli.connection import client_options
from services.cli.jobs import console

DATASET_PATH_HELP = (
    "A folder (zipped on the fly), a zip in one of the data set formats, or an OpenAI chat "
    ".jsonl (images as data URLs)."
)


def describe(dataset: dict[str, Any]) -> str:
    """One line about an uploaded data set; a .jsonl upload answers as an OpenAI file."""
    facts = [
        f"{dataset[key]} {label}"
        for key, label in (("num_samples", "samples"), ("num_images", "images"), ("bytes", "bytes"))
        if dataset.get(key) is not None
    ]
    if dataset.get("format"):
        facts.insert(0, str(dataset["format"]))
    return f"dataset {dataset['id']}: " + ", ".join(facts)


def upload(client: Client, path: Path) -> dict[str, Any]:
    dataset = client.upload_dataset(path)
    console.print(describe(dataset), markup=False, highlight=False, soft_wrap=True)
    return dataset


@click.group()
def datasets() -> None:
    """Your data sets: upload, list, delete."""


@datasets.command("upload", help=f"Validate and store PATH. {DATASET_PATH_HELP}")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@client_options
def datasets_upload(path: Path, client: Client) -> None:
    upload(client, path)


@datasets.command("list")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(min=0), default=0)
@client_options
def datasets_list(limit: int, offset: int, client: Client) -> None:
    """Your data sets, newest first."""
    page = client.datasets(limit, offset)
    table = Table(title=f"data sets {offset + 1}-{offset + len(page['data'])} of {page['total']}")
    table.add_column("id", no_wrap=True)  # whole, to copy into the next command
    for column in ("format", "samples", "images", "bytes", "file", "created"):
        numeric = column in ("samples", "images", "bytes")
        table.add_column(column, justify="right" if numeric else "left")
    for d in page["data"]:
        table.add_row(
            d["id"],
            str(d.get("format", "-")),
            str(d.get("num_samples", "-")),
            str(d.get("num_images", "-")),
            str(d.get("bytes", "-")),
            str(d.get("filename", "-")),
            str(d.get("created_at", ""))[:19].replace("T", " "),
        )
    console.print(table)


@datasets.command("delete")
@click.argument("dataset_id")
@client_options
def datasets_delete(dataset_id: str, client: Client) -> None:
    """Delete a data set and its stored files; refused while an unfinished job uses it."""
    client.delete_dataset(dataset_id)
    console.print(f"deleted dataset {dataset_id}", markup=False, highlight=False)
