"""A worker dies mid-phase; the reaper re-queues it; the next run resumes from the latest
checkpoint in object storage and ends where an uninterrupted run ends."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from orchestrator import dispatch, jobs, repository
from orchestrator.datasets import create_dataset
from orchestrator.db import session_scope
from orchestrator.models import Event, Job, Phase, PhaseTiming, Tenant, utcnow
from orchestrator.reaper import reap
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from tests.factories import zip_folder
from worker.reporting import Reporter
from worker.runner import run_phase

HP = {
    "warmup_epochs": 2,
    "total_epochs": 3,
    "checkpoint_every_steps": 1,
    "augmentation": {"enabled": False},
    "keep_last_checkpoints": 2,
}
REGISTERED = "team/tiny-qwen3-vl"  # the tiny model under a registered name


class WorkerKilled(BaseException):
    """Stands in for SIGKILL: nothing in the run gets to handle it."""


def _submit(
    tenant: str,
    tiny_model_dir: str,
    example_dir: Path,
    *,
    data: bytes | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> str:
    with session_scope() as session:
        row = Tenant(name=tenant)
        session.add(row)
        session.flush()
        dataset = create_dataset(
            session,
            get_store(),
            get_settings(),
            tenant_id=row.id,
            filename="example.zip",
            data=data or zip_folder(example_dir),
        )
        return jobs.submit_job(
            session,
            get_store(),
            tenant_id=row.id,
            dataset_id=dataset.id,
            base_model=tiny_model_dir,
            hyperparameters=hyperparameters or HP,
            pools=None,
            metadata=None,
        ).id


def _run(job_id: str, phase: str, attempt: int = 1) -> None:
    run_phase(
        {"job_id": job_id, "phase": phase, "attempt": attempt, "pool": "x"},
        worker_id=f"test/{phase}/{attempt}",
    )


def _timings(job_id: str, phase: str) -> list[PhaseTiming]:
    with session_scope() as session:
        return list(
            session.scalars(
                select(PhaseTiming)
                .where(PhaseTiming.job_id == job_id, PhaseTiming.phase == phase)
                .order_by(PhaseTiming.id)
            )
        )


def _adapter(job_id: str, attempt: int) -> dict[str, Any]:
    from safetensors.torch import load

    key = f"jobs/{job_id}/warmup/a{attempt}/final/adapter/adapter_model.safetensors"
    return dict(load(get_store().get_bytes(key)))


def _registered_on_a_fresh_node(tiny_model_dir: str) -> tuple[str, list[dict[str, Any]], Path]:
    """The tiny model registered as REGISTERED and not yet in this node's cache: its digest,
    files and the cache entry it will have."""
    import shutil

    from tests.worker.test_model_cache import register
    from worker.model_cache import cache_root

    digest, files = register(REGISTERED, tiny_model_dir)
    entry = cache_root(get_settings()) / digest
    shutil.rmtree(entry, ignore_errors=True)
    return digest, files, entry


def test_a_killed_warmup_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    reference = _submit("reference", tiny_model_dir, example_dir)
    _run(reference, "preprocess")
    _run(reference, "warmup")

    job_id = _submit("acme", tiny_model_dir, example_dir)
    _run(job_id, "preprocess")
    report = Reporter.progress

    def die_at_step_3(self: Reporter, step: int, *args: Any) -> None:
        report(self, step, *args)
        if step == 3:
            raise WorkerKilled()

    monkeypatch.setattr(Reporter, "progress", die_at_step_3)
    with pytest.raises(WorkerKilled):
        _run(job_id, "warmup")
    monkeypatch.setattr(Reporter, "progress", report)

    with session_scope() as session:  # the dead worker's lease runs out
        session.execute(
            update(Phase)
            .where(Phase.job_id == job_id, Phase.name == "warmup")
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    with session_scope() as session:
        reap(session, max_attempts=3, resend_after_seconds=3600)
        warmup = session.get(Job, job_id).phases[1]  # type: ignore[union-attr]
        assert (warmup.status, warmup.attempt) == ("queued", 2)
        assert warmup.resume_key and "/warmup/a1/" in warmup.resume_key
    _run(job_id, "warmup", attempt=2)

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.phases[1].status == "succeeded"
        steps = [
            e.data["step"]
            for e in session.query(Event).filter(
                Event.job_id == job_id, Event.type == "metrics", Event.attempt == 2
            )
        ]
    assert steps and min(steps) > 1  # attempt 2 did not start over
    resumed, uninterrupted = _adapter(job_id, 2), _adapter(reference, 1)
    assert resumed.keys() == uninterrupted.keys()
    for name, tensor in uninterrupted.items():
        torch.testing.assert_close(resumed[name], tensor, atol=1e-5, rtol=0)
    # The killed run's billed seconds stay on record, though its measurements died with it.
    killed, rerun = _timings(job_id, "warmup")
    assert (killed.attempt, killed.outcome, killed.other_s) == (1, "queued", killed.billed_s)
    assert (rerun.attempt, rerun.outcome) == (2, "succeeded")
    assert rerun.train_s > 0 and rerun.input_bytes > 0


def test_cancel_stops_a_running_warmup_at_its_next_step_with_a_checkpoint(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    job_id = _submit("acme", tiny_model_dir, example_dir)
    _run(job_id, "preprocess")
    report = Reporter.progress

    def cancel_at_step_2(self: Reporter, step: int, *args: Any) -> None:
        if step == 2:  # the user presses cancel while the warmup runs
            with session_scope() as session:
                tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
                assert jobs.cancel_job(session, tenant_id, job_id).status == "cancelling"
        report(self, step, *args)

    monkeypatch.setattr(Reporter, "progress", cancel_at_step_2)
    _run(job_id, "warmup")

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert job.status == "cancelled"
        assert [p.status for p in job.phases] == ["succeeded", "cancelled", "cancelled"]
        assert job.phases[1].step == 2  # it stopped at the next step, not at the end
        saved = {
            (c.kind, c.step) for c in repository.checkpoints(session, job_id) if c.phase == "warmup"
        }
    # its state at the step where it stopped was saved before it stopped
    assert saved & {("stop", 2), ("step", 2), ("epoch", 2)}
    [timing] = _timings(job_id, "warmup")
    assert timing.outcome == "cancelled"
    assert timing.samples > 0 and timing.checkpoints >= 2 and timing.checkpoint_upload_s > 0
    assert recorded_dispatch.sent[-1].phase == "warmup"  # nothing was sent after it


def test_a_worker_finds_the_default_tiny_base_but_never_writes_it(
    tiny_model_dir: str, tmp_path: Path
) -> None:
    import shutil

    from orchestrator.errors import RelaytuneError
    from orchestrator.settings import Settings
    from worker.runner import ensure_base_model

    root = tmp_path / "models"
    settings = Settings(
        data_dir=tmp_path, model_root=root, allowed_models=["Qwen/Qwen3-VL-8B-Instruct"]
    )
    assert ensure_base_model("Qwen/Qwen3-VL-8B-Instruct", settings) == "Qwen/Qwen3-VL-8B-Instruct"
    with pytest.raises(RelaytuneError) as missing:
        ensure_base_model("tiny-qwen3-vl", settings)
    assert missing.value.code == "base_model_missing"
    assert "relaytune make-tiny-model" in missing.value.message
    assert not root.exists()  # nothing was written
    shutil.copytree(tiny_model_dir, root / "tiny-qwen3-vl")  # as `make-tiny-model` writes it
    assert ensure_base_model("tiny-qwen3-vl", settings) == str(root / "tiny-qwen3-vl")


def test_a_phase_on_a_worker_without_the_default_model_fails_before_any_download(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    example_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import runner

    job_id = _submit("acme", "tiny-qwen3-vl", example_dir)  # the server knows its default
    bare = tmp_path / "bare-models"  # this worker's model root: nobody wrote the model here
    settings = get_settings().model_copy(update={"model_root": bare})
    monkeypatch.setattr(runner, "get_settings", lambda: settings)
    started: list[str] = []

    def preprocess(claim: Any, *_: Any) -> tuple[str, dict[str, Any]]:
        started.append(claim.phase)  # would download the data set next
        return claim.run_prefix, {}

    monkeypatch.setitem(runner.PHASE_RUNNERS, "preprocess", preprocess)
    _run(job_id, "preprocess")

    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "failed"
        preprocess = job.phases[0]
        assert (preprocess.status, preprocess.error_code) == ("failed", "base_model_missing")
        assert "tiny-qwen3-vl" in (preprocess.error_message or "")
        assert "relaytune make-tiny-model" in (preprocess.error_message or "")
    assert started == []  # the phase's work (its downloads) never began
    assert not bare.exists()  # and the worker wrote no model
    [timing] = _timings(job_id, "preprocess")
    assert (timing.outcome, timing.input_bytes) == ("failed", 0)


def test_one_image_and_no_epochs_left_for_the_final_phase(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
) -> None:
    """The edges: no validation set (one sample), and warmup_epochs == total_epochs, so the
    final phase trains nothing and only evaluates and exports the warmup's adapter."""
    import json

    from tests.factories import dataset_zip

    one_image = dataset_zip({"a.png": {"question": "Which part?", "answer": "top left"}})
    job_id = _submit(
        "acme",
        tiny_model_dir,
        example_dir,
        data=one_image,
        hyperparameters={"warmup_epochs": 2, "total_epochs": 2},
    )
    for phase in ("preprocess", "warmup", "final"):
        _run(job_id, phase)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job is not None and job.status == "succeeded", job.error_message
        output = job.phases[2].output_key
    report = json.loads(get_store().get_bytes(f"{output}/evaluation.json"))
    assert report["num_samples"] == 0
    assert report["adapter"]["val_loss"] is None  # nothing measured is not a score of 0
    assert get_store().exists(f"{output}/adapter/adapter_model.safetensors")
    [final] = _timings(job_id, "final")
    assert final.samples == 0 and final.validation_samples == 0  # nothing left to train on
    assert final.evaluate_s > 0 and final.export_s > 0 and final.checkpoint_upload_s > 0


def test_a_phase_on_a_registered_model_loads_it_from_the_node_cache(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first run on the node fetches the model (a miss, its seconds on the run's clock);
    the next run finds it in the cache (a hit). Each run resolves the model once."""
    from worker import model_cache

    looked: list[str] = []
    materialise = model_cache.materialise

    def counted(*args: Any, **kwargs: Any) -> tuple[Path, bool]:
        looked.append(args[1])
        return materialise(*args, **kwargs)

    monkeypatch.setattr(model_cache, "materialise", counted)

    digest, _, entry = _registered_on_a_fresh_node(tiny_model_dir)
    first = _submit("acme", REGISTERED, example_dir)
    _run(first, "preprocess")
    with session_scope() as session:
        job = session.get(Job, first)
        assert job is not None and job.base_model == REGISTERED
        assert job.phases[0].status == "succeeded", job.phases[0].error_message
    assert (entry / "config.json").is_file()
    [miss] = _timings(first, "preprocess")
    assert miss.model_cache_hit is False and miss.model_fetch_s > 0

    second = _submit("other", REGISTERED, example_dir)
    _run(second, "preprocess")
    [hit] = _timings(second, "preprocess")
    assert hit.outcome == "succeeded" and hit.model_cache_hit is True
    assert looked == [digest, digest]  # one look per run, none again inside the phase


def test_preprocess_fetches_no_weights_and_warmup_on_the_node_fetches_only_them(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An 8B model's 17.5 GB of weights never reach the preprocessing pool: its run fetches
    the processor and configs; warmup on the same node then adds just the weights."""
    from orchestrator.layout import model_file_key
    from orchestrator.model_files import is_weights
    from orchestrator.model_registry import file_sha256
    from tests.worker.test_model_cache import CountingStore
    from worker import model_cache
    from worker.model_cache import READY

    store = CountingStore()
    monkeypatch.setattr(model_cache, "get_store", lambda: store)
    digest, files, entry = _registered_on_a_fresh_node(tiny_model_dir)
    job_id = _submit("acme", REGISTERED, example_dir)

    _run(job_id, "preprocess")
    [preprocess] = _timings(job_id, "preprocess")
    assert preprocess.outcome == "succeeded" and preprocess.model_cache_hit is False
    assert store.gets and not [key for key in store.gets if is_weights(key)]

    fetched_before = len(store.gets)
    _run(job_id, "warmup")
    [warmup] = _timings(job_id, "warmup")
    assert warmup.outcome == "succeeded" and warmup.model_cache_hit is False
    weights = {str(f["path"]) for f in files if is_weights(str(f["path"]))}
    assert sorted(store.gets[fetched_before:]) == sorted(
        model_file_key(digest, path) for path in weights
    )
    assert (entry / READY).is_file()
    for file in files:  # the completed entry verifies
        assert file_sha256(entry / str(file["path"])) == file["sha256"]


def test_a_model_the_server_knows_by_itself_is_not_fetched(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tiny_model_dir: str,
    example_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from worker import runner

    def preprocess(claim: Any, *_: Any) -> tuple[str, dict[str, Any]]:
        return claim.run_prefix, {}

    monkeypatch.setitem(runner.PHASE_RUNNERS, "preprocess", preprocess)
    job_id = _submit("acme", tiny_model_dir, example_dir)
    _run(job_id, "preprocess")
    [timing] = _timings(job_id, "preprocess")
    assert (timing.outcome, timing.model_fetch_s, timing.model_cache_hit) == ("succeeded", 0, None)
