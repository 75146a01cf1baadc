"""Fetching a model from the Hugging Face Hub for `relaytune models add --from-hub`.

Only the files that make a model directory are taken: configs, the processor's and the
tokenizer's files, safetensors weights (no READMEs, no pickled weights, no code). Downloads go
through the Hugging Face cache (HF_HUB_CACHE, HF_TOKEN and HF_HUB_OFFLINE apply as usual), so a
model fetched once is not fetched again, and an offline machine uses what its cache holds.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fnmatch import fnmatch
from pathlib import Path

import click

MODEL_FILES = [
    "*.json",  # config, generation config, (pre)processor, tokenizer, safetensors index
    "*.safetensors",
    "*.jinja",  # chat templates kept beside tokenizer_config.json
    "merges.txt",
    "vocab.txt",
    "tokenizer.model",
    "*.tiktoken",
]


def _label(hub_id: str, revision: str | None) -> str:
    return f"{hub_id}@{revision}" if revision else hub_id


def download_snapshot(hub_id: str, revision: str | None) -> Path:
    """The cached snapshot folder of `hub_id`, downloading what it lacks; a one-line
    ClickException when the Hub (or, offline, the cache) does not have it."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    label = _label(hub_id, revision)
    try:
        return Path(snapshot_download(hub_id, revision=revision, allow_patterns=MODEL_FILES))
    except LocalEntryNotFoundError as exc:
        if constants.HF_HUB_OFFLINE:
            raise click.ClickException(
                f"{label} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and "
                "HF_HUB_OFFLINE forbids downloading it"
            ) from exc
        reason = str(exc).splitlines()[0]
        raise click.ClickException(f"could not download {label}: {reason}") from exc
    except (HfHubHTTPError, HFValidationError) as exc:
        reason = str(exc).splitlines()[0]
        raise click.ClickException(f"could not download {label}: {reason}") from exc


@contextmanager
def model_dir_from_hub(hub_id: str, revision: str | None) -> Iterator[Path]:
    """A directory holding only the model files of the snapshot: a cached snapshot may hold
    more than this download asked for, and the registry records every file it is given."""
    snapshot = download_snapshot(hub_id, revision)
    files = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    wanted = [f for f in files if any(fnmatch(f, pattern) for pattern in MODEL_FILES)]
    with tempfile.TemporaryDirectory(prefix="relaytune-hub-") as staging:
        for relative in wanted:
            link = Path(staging) / relative
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to((snapshot / relative).resolve())
        yield Path(staging)
