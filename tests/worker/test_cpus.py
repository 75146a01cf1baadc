"""Threads per phase: cgroup quota parsing, affinity, division among workers, floor of one; and
the worker child applying the choice to torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker.cpus import (
    affinity_cpus,
    cgroup_cpu_quota,
    choose_threads,
    parse_cfs_quota,
    parse_cpu_max,
)


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("max 100000\n", None),
        ("200000 100000\n", 2.0),
        ("150000 100000", 1.5),
        ("50000 100000", 0.5),
        ("max", None),
        ("", None),
    ],
)
def test_cpu_max(text: str, cpus: float | None) -> None:
    assert parse_cpu_max(text) == cpus


@pytest.mark.parametrize(
    ("quota", "period", "cpus"),
    [
        ("-1\n", "100000\n", None),
        ("300000", "100000", 3.0),
        ("25000", "100000", 0.25),
    ],
)
def test_cfs_quota(quota: str, period: str, cpus: float | None) -> None:
    assert parse_cfs_quota(quota, period) == cpus


def test_cgroup_quota_read_from_v2_then_v1_files(tmp_path: Path) -> None:
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.0
    (tmp_path / "cpu.max").write_text("400000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 4.0
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_quota(tmp_path) is None


def test_affinity_counts_the_cpus_this_process_may_use() -> None:
    assert affinity_cpus() == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("affinity", "quota", "workers", "threads"),
    [
        (2, None, 3, 1),  # `relaytune up` on a 2-core machine
        (2, None, 1, 2),
        (16, None, 3, 5),
        (16, 4.0, 1, 4),  # a container's quota caps the host's cores
        (16, 2.5, 2, 1),
        (4, 8.0, 1, 4),  # a quota above the affinity mask changes nothing
        (1, 0.5, 1, 1),  # half a CPU still runs one thread
    ],
)
def test_threads_from_cpus_and_workers(
    affinity: int, quota: float | None, workers: int, threads: int
) -> None:
    choice = choose_threads(override=0, affinity=affinity, quota=quota, workers=workers)
    assert choice.threads == threads
    assert f"{affinity} CPUs" in choice.reason
    assert ("quota" in choice.reason) == (quota is not None and quota < affinity)
    assert ("shared by" in choice.reason) == (workers > 1)


def test_setting_overrides_the_choice() -> None:
    choice = choose_threads(override=6, affinity=2, quota=1.0, workers=3)
    assert (choice.threads, choice.reason) == (6, "set by RELAYTUNE_WORKER_THREADS")


def test_threads_never_oversubscribe_and_never_drop_below_one() -> None:
    quotas = [None, 0.01, 0.5, 1.0, 1.5, 2.0, 3.7, 8.0, 64.0]
    for affinity in range(1, 33):
        for quota in quotas:
            for workers in range(1, 9):
                threads = choose_threads(
                    override=0, affinity=affinity, quota=quota, workers=workers
                ).threads
                usable = affinity if quota is None else min(affinity, max(1, int(quota)))
                assert threads >= 1
                assert threads * workers <= usable or threads == 1, (affinity, quota, workers)
                assert (threads + 1) * workers > usable, "a CPU share was left unused"


CHILD_START = """
import json, logging
import torch
from celery import signals
from worker.celery_app import app

logging.basicConfig(level=logging.INFO)
signals.worker_process_init.send(sender="test@host")
print(json.dumps([torch.get_num_threads(), torch.get_num_interop_threads()]))
"""


@pytest.mark.parametrize(
    ("env", "threads"),
    [
        ({"RELAYTUNE_WORKER_THREADS": "1"}, 1),
        ({"RELAYTUNE_WORKER_THREADS": "3"}, 3),
        ({"RELAYTUNE_WORKERS_PER_MACHINE": str(len(os.sched_getaffinity(0)) + 1)}, 1),
    ],
)
def test_a_worker_child_sets_torch_threads_before_its_phase(
    env: dict[str, str], threads: int
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RELAYTUNE_WORKER")}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_START],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [threads, threads]
    assert f"using {threads} threads" in proc.stderr


CHILD_START_WITHOUT_PRELOAD = """
import json, sys
from celery import signals
from worker.celery_app import app

signals.worker_process_init.send(sender="test@host")
preloaded = "torch" in sys.modules
import torch
print(json.dumps([preloaded, torch.get_num_threads()]))
"""


def test_a_child_without_preloaded_torch_sizes_it_without_importing_it() -> None:
    # Importing torch in the child's start-up could outlast Celery's wait for the child.
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RELAYTUNE_WORKER") and k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD_START_WITHOUT_PRELOAD],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "RELAYTUNE_WORKER_THREADS": "1"},
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, 1]
