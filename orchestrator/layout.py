"""Where relaytune keeps things in the object store. Every key is built here, and only here.

    datasets/<dataset_id>/upload.zip          an upload, as validated
    jobs/<job_id>/dataset/dataset.zip         the job's own copy of it, taken at submit
    jobs/<job_id>/dataset/validation.zip      and of its validation data set, if it names one
    jobs/<job_id>/<phase>/a<N>/               one run: attempt N of the phase
        <kind>-<step>/                        a checkpoint; kind: step, time, epoch, stop, best
        final/                                the run's last checkpoint
        samples.pt, image_processor/          preprocess: the tokenized artifact
        adapter/, evaluation.json, merged/    final: the export (merged/ only on request)
    models/sha256/<digest>/<file>             a registered model's files, stored once per
                                              content digest (orchestrator.model_registry)

A checkpoint directory holds adapter/ (PEFT), training_state.pt (optimizer, scheduler, scaler,
RNG, position, the job's best so far) and manifest.json. A directory's manifest.json is
uploaded last, and a directory is recorded in SQL only once all of it is uploaded, so nothing
half-written is ever read; objects under jobs/ that no row points to are deleted by
orchestrator.sweep.

A phase's output key (Phase.output_key) is what it hands on:
    preprocess  its run prefix, holding the artifact
    warmup      its run's final/ checkpoint, which the final phase continues from
    final       its run prefix, holding the export; the job serves the last one that
                succeeded (Job.adapter_key) while the final phase runs again
"""

from __future__ import annotations

import re
from enum import StrEnum

JOBS_PREFIX = "jobs/"
MODELS_PREFIX = "models/sha256/"
# Names inside a stored directory, shared by the recipe that writes them locally.
MANIFEST_FILE = "manifest.json"
ADAPTER_DIR = "adapter"
EVALUATION_FILE = "evaluation.json"
MERGED_DIR = "merged"


class CheckpointKind(StrEnum):
    """What a recorded directory is (the `kind` of its checkpoint row)."""

    STEP = "step"  # every `checkpoint_every_steps` optimizer steps
    TIME = "time"  # `checkpoint_interval_seconds` after the previous one
    EPOCH = "epoch"  # at an epoch's end (but the run's last)
    STOP = "stop"  # when the run was asked to stop
    BEST = "best"  # the job's best validation metric so far improved
    FINAL = "final"  # the end of the run's epochs
    ARTIFACT = "artifact"  # the preprocess phase's output, not a training state
    ADAPTER = "adapter"  # the final phase's export, not a training state


K = CheckpointKind
# A re-run of a phase continues from the newest of these.
RESUMABLE_KINDS = frozenset({K.STEP, K.TIME, K.EPOCH, K.STOP, K.FINAL})
# Directories of a run that live and die by their own rows (see is_checkpoint_dir).
_CHECKPOINT_DIR = re.compile(
    rf"^(?:(?:{'|'.join((K.STEP, K.TIME, K.EPOCH, K.STOP, K.BEST))})-\d+|{K.FINAL})/"
)


def upload_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}/upload.zip"


def job_dataset_key(job_id: str) -> str:
    return f"{JOBS_PREFIX}{job_id}/dataset/dataset.zip"


def job_validation_dataset_key(job_id: str) -> str:
    return f"{JOBS_PREFIX}{job_id}/dataset/validation.zip"


def model_prefix(digest: str) -> str:
    """A registered model's files: the same files always land under the same prefix."""
    return f"{MODELS_PREFIX}{digest}"


def model_file_key(digest: str, relative: str) -> str:
    return key_in(model_prefix(digest), relative)


def run_prefix(job_id: str, phase: str, attempt: int) -> str:
    """Everything one attempt of a phase writes lies under this prefix."""
    return f"{JOBS_PREFIX}{job_id}/{phase}/a{attempt}"


def checkpoint_key(run: str, kind: CheckpointKind, step: int) -> str:
    """A run's checkpoint; the kind keeps a best and an epoch checkpoint of one step apart."""
    if kind == K.FINAL:
        return key_in(run, K.FINAL)
    return key_in(run, f"{kind}-{step}")


def artifact_key(run: str) -> str:
    """The preprocess run's artifact lies at the top of its run prefix."""
    return run


def export_key(run: str) -> str:
    """The final run's export (adapter, evaluation, merged model) lies at the top of its run
    prefix, beside its checkpoints."""
    return run


def adapter_prefix(export: str) -> str:
    return key_in(export, ADAPTER_DIR)


def evaluation_key(export: str) -> str:
    return key_in(export, EVALUATION_FILE)


def merged_prefix(export: str) -> str:
    return key_in(export, MERGED_DIR)


def manifest_key(prefix: str) -> str:
    return key_in(prefix, MANIFEST_FILE)


def key_in(prefix: str, relative: str) -> str:
    """The key of `relative` (a POSIX path) inside the directory stored at `prefix`."""
    return f"{prefix.rstrip('/')}/{relative}"


def listing_prefix(prefix: str) -> str:
    """What to list for everything inside the directory at `prefix`, and nothing beside it
    (`step-1/` must not list `step-10/`)."""
    return prefix.rstrip("/") + "/"


def is_checkpoint_dir(relative: str) -> bool:
    """Whether a key, relative to a run prefix, lies inside one of the run's checkpoints."""
    return _CHECKPOINT_DIR.match(relative) is not None
