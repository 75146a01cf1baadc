"""Every object key follows the one documented layout."""

from __future__ import annotations

import pytest

from orchestrator import layout
from orchestrator.layout import CheckpointKind

RUN = "jobs/j1/final/a2"


def test_keys_of_a_job() -> None:
    assert layout.upload_key("d1") == "datasets/d1/upload.zip"
    assert layout.job_dataset_key("j1") == "jobs/j1/dataset/dataset.zip"
    assert layout.run_prefix("j1", "final", 2) == RUN
    assert layout.checkpoint_key(RUN, CheckpointKind.BEST, 7) == f"{RUN}/best-7"
    assert layout.checkpoint_key(RUN, CheckpointKind.FINAL, 9) == f"{RUN}/final"
    export = layout.export_key(RUN)
    assert layout.adapter_prefix(export) == f"{RUN}/adapter"
    assert layout.evaluation_key(export) == f"{RUN}/evaluation.json"
    assert layout.merged_prefix(export) == f"{RUN}/merged"
    assert layout.manifest_key(layout.artifact_key(RUN)) == f"{RUN}/manifest.json"


def test_a_trailing_slash_does_not_double() -> None:
    assert layout.key_in(RUN + "/", "adapter") == f"{RUN}/adapter"
    assert layout.listing_prefix(RUN + "/") == layout.listing_prefix(RUN) == RUN + "/"


@pytest.mark.parametrize(
    ("relative", "inside"),
    [
        ("step-3/adapter/adapter_model.safetensors", True),
        ("best-12/manifest.json", True),
        ("final/training_state.pt", True),
        ("adapter/adapter_model.safetensors", False),  # the export, not a checkpoint
        ("evaluation.json", False),
        ("samples.pt", False),
        ("step-x/manifest.json", False),
    ],
)
def test_checkpoint_directories_under_a_run(relative: str, inside: bool) -> None:
    assert layout.is_checkpoint_dir(relative) is inside


def test_every_rolling_kind_names_a_checkpoint_directory() -> None:
    for kind in layout.RESUMABLE_KINDS | {CheckpointKind.BEST}:
        key = layout.checkpoint_key(RUN, kind, 4)
        assert layout.is_checkpoint_dir(key[len(RUN) + 1 :] + "/manifest.json"), kind
