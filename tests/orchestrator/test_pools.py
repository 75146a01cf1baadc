"""Pools as data: a pools file, one currency, and prices that apply to time not yet billed."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import update

from orchestrator import dispatch, jobs, runs
from orchestrator.cost import phase_cost
from orchestrator.datasets import create_dataset
from orchestrator.db import session_scope
from orchestrator.errors import InvalidRequest
from orchestrator.models import Job, Phase, Pool, Tenant, utcnow
from orchestrator.pools import PoolChanges, apply_pools_file, queue_of, upsert_pool
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from tests.factories import dataset_zip

POOLS_YAML = """
- name: h100
  gpu_model: NVIDIA H100
  gpu_memory_gb: 80
  hourly_price: 20
  peak_tflops: 989
  memory_bandwidth_gbs: 3350
- name: a100
  hourly_price: 7.5
"""


def _pool(name: str) -> Pool:
    with session_scope() as session:
        pool = session.get(Pool, name)
        assert pool is not None
        return pool


def test_a_yaml_pools_file_adds_and_reprices(clean_db: None, tmp_path: Path) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(POOLS_YAML)
    with session_scope() as session:
        applied = apply_pools_file(session, path)
    assert [(p.name, created) for p, created in applied] == [("h100", True), ("a100", False)]
    h100 = _pool("h100")
    assert (h100.queue, h100.currency, h100.hourly_price, h100.supports_bf16) == (
        "gpu.h100",
        "CNY",
        Decimal("20"),
        True,
    )
    assert _pool("a100").hourly_price == Decimal("7.5")
    assert _pool("a100").gpu_model == "NVIDIA A100"


def test_a_json_file_may_switch_every_pool_to_another_currency_at_once(
    clean_db: None, tmp_path: Path
) -> None:
    path = tmp_path / "pools.json"
    path.write_text(json.dumps([{"name": n, "currency": "usd"} for n in ("t4", "a10", "a100")]))
    with session_scope() as session:
        apply_pools_file(session, path)
    assert {_pool(n).currency for n in ("t4", "a10", "a100")} == {"USD"}


def test_one_pool_alone_may_not_leave_the_common_currency(clean_db: None) -> None:
    with pytest.raises(InvalidRequest) as caught, session_scope() as session:
        upsert_pool(session, "a10", PoolChanges(currency="USD"))
    assert caught.value.code == "currency_mismatch"
    assert "CNY: a100, t4" in caught.value.message and "USD: a10" in caught.value.message
    assert _pool("a10").currency == "CNY"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            "- name: h100\n  gpu_model: X\n  gpu_memory_gb: -3\n  hourly_price: 1\n",
            "pool h100: gpu_memory_gb",
        ),
        ("- name: a100\n  hourly_prize: 1\n", "pool a100: hourly_prize"),
        ("name: a100\n", "must hold a list"),
        ("- [unclosed\n", "is not valid"),
        ("- name: h100\n  hourly_price: 1\n", "gpu_model, gpu_memory_gb must be given"),
    ],
)
def test_a_bad_pools_file_says_where_and_changes_nothing(
    clean_db: None, tmp_path: Path, text: str, where: str
) -> None:
    path = tmp_path / "pools.yaml"
    path.write_text(text)
    with pytest.raises(InvalidRequest) as caught, session_scope() as session:
        apply_pools_file(session, path)
    assert where in caught.value.message
    with session_scope() as session:
        assert session.get(Pool, "h100") is None
        assert session.get(Pool, "a100").hourly_price == Decimal(8)  # type: ignore[union-attr]


def test_queue_comes_from_the_store_with_a_fallback(clean_db: None) -> None:
    with session_scope() as session:
        upsert_pool(session, "a10", PoolChanges(queue="gpu.a10-east"))
    with session_scope() as session:
        assert queue_of(session, "a10") == "gpu.a10-east"
        assert queue_of(session, "nowhere") == "gpu.nowhere"


def test_a_new_price_applies_to_time_not_yet_billed(
    clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher
) -> None:
    with session_scope() as session:
        tenant = Tenant(name="acme")
        session.add(tenant)
        session.flush()
        dataset = create_dataset(
            session,
            get_store(),
            get_settings(),
            tenant_id=tenant.id,
            filename="d.zip",
            data=dataset_zip(),
        )
        job_id = jobs.submit_job(
            session,
            get_store(),
            tenant_id=tenant.id,
            dataset_id=dataset.id,
            base_model="tiny",
            hyperparameters={},
            pools=None,
            metadata=None,
        ).id

    def run_for(hours: float, attempt: int) -> None:
        with session_scope() as session:
            claim = runs.claim_phase(
                session,
                job_id=job_id,
                phase="preprocess",
                attempt=attempt,
                worker_id="w",
                lease_seconds=60,
            )
        with session_scope() as session:
            session.execute(
                update(Phase)
                .where(Phase.job_id == job_id, Phase.name == "preprocess")
                .values(started_at=utcnow() - timedelta(hours=hours))
            )
        with session_scope() as session:
            runs.fail_phase(session, claim, code="phase_error", message="boom")

    run_for(2, attempt=1)  # two hours at 1 CNY/h
    with session_scope() as session:
        upsert_pool(session, "t4", PoolChanges(hourly_price=Decimal(10)))
    with session_scope() as session:
        phase = session.get(Job, job_id).phases[0]  # type: ignore[union-attr]
        assert abs(phase_cost(phase, session.get(Pool, "t4"), utcnow()) - 2) < Decimal("0.01")
        jobs.requeue_phase(session, phase.job.tenant_id, job_id, "preprocess")
    run_for(1, attempt=2)  # one more hour, at the new 10 CNY/h
    with session_scope() as session:
        phase = session.get(Job, job_id).phases[0]  # type: ignore[union-attr]
        assert abs(Decimal(phase.cost_amount) - 12) < Decimal("0.01")
