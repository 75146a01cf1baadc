"""Learned profiles: measured runs in phase_timings take over from the seeded figures."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from orchestrator import dispatch, profiles, repository
from orchestrator.db import session_scope
from orchestrator.estimate import DatasetSize, PlanEstimate, estimate_job
from orchestrator.hyperparameters import Hyperparameters
from orchestrator.models import Checkpoint, PhaseTiming, utcnow
from orchestrator.profiles import LEARNED_RUNS
from tests.orchestrator.relay_helpers import new_tenant, submit

EIGHT_B = "/models/Qwen3-VL-8B-Instruct"
DATASET = DatasetSize(num_samples=20, num_images=20, bytes=6_000_000)


@pytest.fixture
def job_id(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> str:
    return submit(new_tenant(), hyperparameters=None)


def _timing(job_id: str, attempt: int, **fields: Any) -> PhaseTiming:
    row = {
        "phase": "warmup",
        "pool": "a10",
        "outcome": "succeeded",
        "model_key": "qwen3-vl-8b",
        "lora_targets": "q_proj,v_proj",
        "micro_batch": 2,
        "startup_s": 40.0,
        "input_download_s": 2.0,
        "train_s": 100.0,
        "checkpoint_upload_s": 10.0,
        "billed_s": 160.0,
        "samples": 200,
        "checkpoints": 10,
        "input_bytes": 200_000_000,
        "created_at": utcnow() + timedelta(seconds=attempt),
        **fields,
    }
    return PhaseTiming(job_id=job_id, attempt=attempt, **row)


def _estimate(base_model: str = EIGHT_B, **hp: Any) -> PlanEstimate | None:
    with session_scope() as session:
        pools = repository.pools_by_name(session)
        return estimate_job(
            session,
            base_model=base_model,
            hyperparameters=Hyperparameters(**hp),
            dataset=DATASET,
            pools={"preprocess": pools["t4"], "warmup": pools["a10"], "final": pools["a100"]},
        )


def test_measured_runs_replace_the_derived_figures(job_id: str) -> None:
    before = _estimate()
    assert before is not None
    warmup_before = before.phases[1]
    assert warmup_before.sources == ["derived"]
    with session_scope() as session:
        # Seven runs: only the newest five count; the two oldest are far off.
        for attempt, per_sample in enumerate([9.0, 9.0, 0.5, 0.4, 0.5, 0.6, 0.5], start=1):
            session.add(_timing(job_id, attempt, train_s=200 * per_sample))
        session.add(_timing(job_id, 50, outcome="failed", train_s=9999.0))  # failed: ignored
        session.add(_timing(job_id, 51, micro_batch=8, train_s=1.0))  # other micro-batch
    after = _estimate()
    assert after is not None
    warmup = after.phases[1]
    assert warmup.sources == ["measured"]
    assert warmup.seconds["startup"] == pytest.approx(40.0)
    # The median, 0.5 s per sample; measured seconds already hold the validation passes.
    assert warmup.seconds["train"] == pytest.approx(0.5 * warmup.samples)
    assert warmup.seconds["checkpoint_upload"] == pytest.approx(1.0 * warmup.checkpoints)
    assert warmup.cost != warmup_before.cost
    # The final phase runs on another pool: nothing measured there.
    assert after.phases[2].sources == ["derived"]


def test_a_pools_measured_model_fetch_is_the_average_of_its_hits_and_misses(
    job_id: str,
) -> None:
    with session_scope() as session:
        # One cold node fetched the model; later runs found it in the cache.
        for attempt, (fetch_s, hit) in enumerate(
            [(200.0, False), (0.01, True), (0.01, True), (0.02, True)], start=1
        ):
            session.add(_timing(job_id, attempt, model_fetch_s=fetch_s, model_cache_hit=hit))
        session.add(_timing(job_id, 9, model_fetch_s=0.0))  # a model no worker fetched
    estimate = _estimate()
    assert estimate is not None
    warmup = estimate.phases[1]
    assert warmup.seconds["model_fetch"] == pytest.approx((200.0 + 0.04) / 4)
    assert warmup.sources == ["measured"]
    assert estimate.phases[2].seconds["model_fetch"] == 0  # a model under the model root


def test_a_registered_models_fetch_is_derived_from_its_stored_bytes(
    job_id: str, tiny_model_dir: str
) -> None:
    from pathlib import Path

    from orchestrator.model_files import is_weights
    from orchestrator.model_registry import add_model
    from orchestrator.storage import get_store

    with session_scope() as session:
        model, _ = add_model(session, get_store(), "team/tiny-qwen3-vl", Path(tiny_model_dir))
        stored = model.total_bytes
        read = sum(f["bytes"] for f in model.files if not is_weights(f["path"]))
    estimate = _estimate("team/tiny-qwen3-vl")
    assert estimate is not None
    latency = profiles.TINY_CPU_TRANSFER_S
    fetch = profiles.model_fetch_seconds(stored, latency)
    # preprocessing fetches every file but the weights
    preprocess = profiles.model_fetch_seconds(read, latency)
    assert 0 < read < stored
    assert [p.seconds["model_fetch"] for p in estimate.phases] == [
        pytest.approx(preprocess),
        pytest.approx(fetch),
        pytest.approx(fetch),
    ]


def test_a_registered_model_under_a_name_of_its_own_is_estimated_by_its_config(
    job_id: str, tiny_model_dir: str
) -> None:
    from pathlib import Path

    from orchestrator.model_registry import add_model
    from orchestrator.model_shapes import QWEN3_VL_8B, SHAPES
    from orchestrator.models import RegisteredModel
    from orchestrator.storage import get_store
    from tests.orchestrator.test_model_shapes import CONFIG_8B

    assert _estimate("acme-vl") is None  # no catalog name, no run: nothing known
    with session_scope() as session:
        add_model(session, get_store(), "acme-vl", Path(tiny_model_dir))
        # An 8B registered as "acme-vl-8": only its row matters to the estimator.
        session.add(
            RegisteredModel(
                name="acme-vl-8",
                digest="8" * 64,
                architecture="Qwen3VLForConditionalGeneration",
                parameter_count=SHAPES[QWEN3_VL_8B].total_params,
                dtype="bfloat16",
                total_bytes=17_534_247_392,
                files=[
                    {"path": "tokenizer.json", "sha256": "t" * 64, "bytes": 11_422_654},
                    {"path": "model.safetensors", "sha256": "w" * 64, "bytes": 17_522_824_738},
                ],
                lora_target_modules=["q_proj", "v_proj"],
                config=CONFIG_8B,
                processor=None,
            )
        )
    tiny = _estimate("acme-vl")
    assert tiny is not None  # the tiny model's shape, its CPU figures
    assert all(p.feasible for p in tiny.phases)
    assert tiny.phases[1].sources == ["default"]
    eight = _estimate("acme-vl-8")
    catalog = _estimate(EIGHT_B)
    assert eight is not None and catalog is not None
    for mine, theirs in zip(eight.phases, catalog.phases, strict=True):
        assert mine.seconds["train"] == pytest.approx(theirs.seconds["train"])
        assert mine.peak_memory_bytes == theirs.peak_memory_bytes
        assert mine.seconds["model_fetch"] > 0  # registered: each pool fetches what it reads
        assert theirs.seconds["model_fetch"] == 0  # under the model root: nothing to fetch
    with session_scope() as session:
        pools = repository.pools_by_name(session)
        on_t4 = estimate_job(
            session,
            base_model="acme-vl-8",
            hyperparameters=Hyperparameters(),
            dataset=DATASET,
            pools={p: pools["t4"] for p in ("preprocess", "warmup", "final")},
        )
    assert on_t4 is not None and not on_t4.feasible
    assert "acme-vl-8 weights" in on_t4.reason


def test_learned_profile_counts_its_runs(job_id: str) -> None:
    from orchestrator.profiles import learned_rates

    with session_scope() as session:
        for attempt in range(1, 8):
            session.add(_timing(job_id, attempt))
    with session_scope() as session:
        rates, runs = learned_rates(session, "warmup", "a10", "qwen3-vl-8b", "q_proj,v_proj", 2)
    assert runs == LEARNED_RUNS
    assert rates["train_s_per_sample"] == pytest.approx(0.5)
    assert rates["download_s_per_byte"] == pytest.approx(1e-8)


def test_a_model_of_unknown_shape_is_estimated_from_its_own_runs(job_id: str) -> None:
    assert _estimate("my-own-vlm") is None
    with session_scope() as session:
        for phase, pool in (("preprocess", "t4"), ("warmup", "a10"), ("final", "a100")):
            session.add(
                _timing(
                    job_id,
                    1 if phase == "warmup" else 2 if phase == "final" else 3,
                    phase=phase,
                    pool=pool,
                    model_key="my-own-vlm",
                    evaluate_s=6.0,
                    validation_samples=12,
                    export_s=1.0,
                )
            )
    estimate = _estimate("my-own-vlm")
    assert estimate is not None
    assert all(p.sources == ["measured"] for p in estimate.phases)
    # 12 scored = 3 held out x (3 final epochs' validation passes + the evaluation): 2 s each.
    assert estimate.phases[2].seconds["evaluate"] == pytest.approx(3 * 2.0)


def test_the_rest_of_a_run_is_learned_per_run_and_billed_in_every_phase(job_id: str) -> None:
    with session_scope() as session:
        for attempt, other in enumerate([0.1, 0.3, 0.2], start=1):
            session.add(_timing(job_id, attempt, other_s=other))
    estimate = _estimate()
    assert estimate is not None
    warmup = estimate.phases[1]
    assert warmup.seconds["other"] == pytest.approx(0.2)
    assert warmup.total_seconds == pytest.approx(sum(warmup.seconds.values()))
    # Nothing measured on the other pools: the stated per-run figure.
    assert estimate.phases[2].seconds["other"] == pytest.approx(profiles.OTHER_S)


def test_preprocessing_work_is_its_build_time_without_the_rest(job_id: str) -> None:
    with session_scope() as session:
        session.add(
            _timing(job_id, 1, phase="preprocess", pool="t4", train_s=10.0, other_s=5.0, samples=20)
        )
    estimate = _estimate()
    assert estimate is not None
    pre = estimate.phases[0]
    assert pre.seconds["preprocess"] == pytest.approx(0.5 * pre.samples)
    assert pre.seconds["other"] == pytest.approx(5.0)


def test_downloads_are_sized_by_the_models_measured_artifact(job_id: str) -> None:
    derived = _estimate()
    assert derived is not None
    with session_scope() as session:
        # Warmup runs measure the store's rate (1e-8 s per byte); a preprocess run on another
        # pool measured the artifact: 40 samples in 400 kB, 10 kB each.
        for attempt in range(1, 3):
            session.add(_timing(job_id, attempt))
        session.add(_timing(job_id, 3, phase="preprocess", pool="a100", samples=40))
        session.add(
            Checkpoint(
                job_id=job_id,
                phase="preprocess",
                attempt=3,
                kind="artifact",
                key="jobs/x/preprocess/a3",
                bytes=400_000,
            )
        )
    estimate = _estimate()
    assert estimate is not None
    pre, warmup, final = estimate.phases
    assert warmup.seconds["input_download"] == pytest.approx(pre.samples * 10_000 * 1e-8)
    # The final phase has no measured rate: its latency, the checkpoint and the same artifact.
    artifact_s = pre.samples * 10_000 / profiles.DOWNLOAD_BYTES_PER_S
    assert final.seconds["input_download"] < derived.phases[2].seconds["input_download"]
    assert final.seconds["input_download"] > profiles.TRANSFER_LATENCY_S + artifact_s
