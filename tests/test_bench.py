"""The CPU benches (`make bench`) run end to end at tiny sizes (`--quick`) and write results
files with every figure BENCHMARKS.md reads. Nothing is asserted about speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parent.parent
MACHINE_FIELDS = {"cpu_model", "cpus", "memory_gib", "load_average_1m", "python", "torch"}


def run_quick(name: str, out_dir: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.run", "--quick", "--only", name]
    subprocess.run([*command, "--out-dir", str(out_dir)], cwd=ROOT, check=True, timeout=900)
    (written,) = out_dir.glob(f"{name}-cpu-*.json")
    result: dict[str, Any] = json.loads(written.read_text())
    assert result["bench"] == name and result["quick"] is True
    assert result["machine"].keys() >= MACHINE_FIELDS
    return result


def test_train_step_compares_both_sides_and_their_memory(tmp_path: Path) -> None:
    result = run_quick("train-step", tmp_path)
    summary = result["summary"]
    for side in ("relaytune", "baseline"):
        assert summary[side]["median"] > 0 and summary["peak_rss_mib"][side] > 0
    assert summary["ratio_median"] > 0 and summary["ratio_best"] > 0
    assert {r["side"] for r in result["runs"]} == {"relaytune", "baseline"}
    assert result["settings"]["precision"] == "fp32"


def test_object_store_rates_each_operation_and_counts_small_object_requests(
    tmp_path: Path,
) -> None:
    result = run_quick("object-store", tmp_path)
    for operation in ("large_upload", "large_download", "small_upload", "small_download"):
        assert result["summary"][operation]["ratio_median"] > 0
    requests = result["requests_for_small_objects"]["relaytune"]
    small = result["settings"]["small_objects"]
    assert requests["small_upload"] == {"PutObject": small}
    assert requests["small_download"] == {"ListObjectsV2": 1, "GetObject": small}


def test_api_load_reports_percentiles_per_cell_and_the_service_time(tmp_path: Path) -> None:
    result = run_quick("api-load", tmp_path)
    cells = result["cells"]
    assert {c["endpoint"] for c in cells} == {"get_job", "list_jobs", "post_job"}
    for cell in cells:
        assert cell["requests"] > 0 and cell["errors"] == 0
        assert cell["p50_ms"] <= cell["p99_ms"] and cell["throughput_per_s"] > 0
        assert cell["cpu_ms_per_request"]["api"] > 0  # the server did work for its answers
    paced = result["paced_get_job"]  # a loaded machine may not keep its pace: no figure is sure
    assert paced["sent"] + paced["not_sent"] == paced["target_rate_per_s"] * 1
    assert paced["requests"] + paced["errors"] <= paced["sent"]
    for endpoint in ("get_job", "list_jobs", "post_job"):
        work = result["service_time"][endpoint]
        assert work["sql_statements_per_request"] > 0
        assert "authenticate_key (API key lookup)" in work["ms_per_request_in"]
    assert result["goal"]["met"] is False  # a quick run never counts for the goal


def test_data_scale_reports_upload_preprocess_memory_and_artifact(tmp_path: Path) -> None:
    result = run_quick("data-scale", tmp_path)
    rows = result["rows"]
    assert [r["images"] for r in rows] == result["settings"]["sizes"]
    for row in rows:
        assert row["upload_ms_per_image"] > 0 and row["preprocess_ms_per_image"] > 0
        assert row["api_rss_peak_mib"] >= row["api_rss_before_mib"] > 0
        assert row["artifact_bytes"] > 0
        # One augmented copy of each training sample besides the originals.
        assert row["images"] < row["samples_in_artifact"] <= 2 * row["images"]


def test_handoff_compares_both_configurations_and_times_every_phase_over_s3(
    tmp_path: Path,
) -> None:
    result = run_quick("handoff", tmp_path)
    assert result["object_store"] == "s3"  # the launcher's endpoint, not the local store
    summary = result["summary"]
    for figure in ("wall_s", "fixed_overhead_s", "handoff_gap_s"):
        assert summary[figure]["ratio_median"] > 0
    assert {r["config"] for r in result["runs"]} == {"before", "after"}
    for run in result["runs"]:
        assert run["status"] == "succeeded" and run["artifact_bytes"] > 0
        timing = run["timing"]
        assert timing.keys() == {"preprocess", "warmup", "final"}
        for phase in ("warmup", "final"):  # each training phase fetched its input and published
            assert timing[phase]["input_download_s"] > 0 and timing[phase]["input_bytes"] > 0
            assert timing[phase]["checkpoint_upload_s"] > 0 and timing[phase]["startup_s"] > 0
    for config in ("before", "after"):
        assert summary["per_phase"][config]["final"]["billed_s"] > 0


def test_scheduler_loses_and_duplicates_no_phase_and_reports_dispatch_and_the_reaper(
    tmp_path: Path,
) -> None:
    result = run_quick("scheduler", tmp_path)
    for mode in ("burst", "serial"):
        run = result[mode]
        assert run["mode"] == mode and run["jobs_succeeded"] == run["jobs"]
        assert run["lost_jobs"] == 0 and run["phases_not_exactly_once"] == 0
        latency = run["transition_latency"]
        assert latency["n"] == 2 * run["jobs"]  # preprocess -> warmup -> final, per job
        assert 0 < latency["p50_ms"] <= latency["p99_ms"]
    reaper = result["reaper"]
    rounds = reaper["expired_all_requeued_in_rounds"]
    assert 0 < rounds["first_sent_after_s"] <= rounds["total_s"]
    assert reaper["expired_all_requeued_s"] > 0 and reaper["jobs"] > 0
