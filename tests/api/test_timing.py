"""A job's phases show where their latest run's billed time went; /metrics sums every run."""

from __future__ import annotations

from fastapi.testclient import TestClient

from orchestrator import runs
from orchestrator.db import session_scope
from orchestrator.timings import RunTiming
from tests.factories import new_api_key


def _run_preprocess(job_id: str, attempt: int, timing: RunTiming, *, fail: bool) -> None:
    with session_scope() as session:
        claim = runs.claim_phase(
            session,
            job_id=job_id,
            phase="preprocess",
            attempt=attempt,
            worker_id="w1",
            lease_seconds=60,
        )
    with session_scope() as session:
        if fail:
            runs.fail_phase(session, claim, code="phase_error", message="boom", timing=timing)
        else:
            runs.complete_phase(
                session, claim, output_key=claim.run_prefix, summary={}, timing=timing
            )


def test_job_shows_the_latest_run_timing_and_metrics_sum_every_run(
    client: TestClient, dataset_id: str
) -> None:
    job_id = client.post("/v1/jobs", json={"dataset_id": dataset_id, "base_model": "tiny"}).json()[
        "id"
    ]
    before = client.get(f"/v1/jobs/{job_id}").json()
    assert all(p["timing"] is None for p in before["phases"])

    _run_preprocess(job_id, 1, RunTiming(startup_s=0.0, train_s=0.0), fail=True)
    assert client.post(f"/v1/jobs/{job_id}/phases/preprocess/requeue").status_code == 200
    _run_preprocess(
        job_id,
        2,
        RunTiming(
            samples=12,
            tokens=3400,
            checkpoints=1,
            device="cpu",
            peak_memory_bytes=123,
            model_cache_hit=False,
        ),
        fail=False,
    )

    job = client.get(f"/v1/jobs/{job_id}").json()
    timing = job["phases"][0]["timing"]
    assert (timing["attempt"], timing["outcome"], timing["runs"]) == (2, "succeeded", 2)
    assert timing["billing"] == "claim_to_release"
    assert (timing["samples"], timing["tokens"], timing["checkpoints"]) == (12, 3400, 1)
    assert (timing["device"], timing["peak_memory_bytes"]) == ("cpu", 123)
    assert (timing["model_fetch_s"], timing["model_cache_hit"]) == (0.0, False)
    components = (
        "startup_s",
        "model_fetch_s",
        "input_download_s",
        "train_s",
        "evaluate_s",
        "export_s",
        "checkpoint_upload_s",
        "other_s",
    )
    assert abs(sum(timing[c] for c in components) - timing["billed_s"]) < 1e-6
    assert [p["timing"] for p in job["phases"][1:]] == [None, None]
    listed = client.get("/v1/jobs").json()["data"][0]
    assert listed["phases"][0]["timing"] == timing

    admin = {"Authorization": f"Bearer {new_api_key('ops', admin=True)}"}  # operators only
    text = client.get("/metrics", headers=admin).text
    assert 'relaytune_phase_runs_total{outcome="failed",phase="preprocess",pool="t4"} 1.0' in text
    assert (
        'relaytune_phase_runs_total{outcome="succeeded",phase="preprocess",pool="t4"} 1.0' in text
    )
    assert 'relaytune_phase_seconds_total{component="train",phase="preprocess",pool="t4"}' in text
    fetch = 'relaytune_phase_seconds_total{component="model_fetch",phase="preprocess",pool="t4"}'
    assert fetch in text
    assert 'relaytune_phase_samples_total{phase="preprocess",pool="t4"} 12.0' in text
