"""A run's reporter rides out a job store outage: its writes are retried while its lease lasts,
training is not held up by progress, and only a lapsed or lost lease ends the run. The outage
is real: the reporter reaches PostgreSQL through a proxy that the test cuts."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from orchestrator import dispatch, runs
from orchestrator.db import make_engine
from orchestrator.errors import LeaseLost
from orchestrator.models import Checkpoint, Event, Phase
from orchestrator.settings import Settings, get_settings
from orchestrator.storage import get_store
from tests.conftest import reset_caches
from tests.faults.tcp_proxy import TcpProxy
from tests.orchestrator.relay_helpers import (
    claim,
    complete,
    expire_lease,
    new_tenant,
    run_reaper,
    submit,
)
from worker import runner
from worker.reporting import Reporter


@pytest.fixture
def direct(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions that bypass the proxy, for the test's own reads."""
    engine = make_engine(database_url)
    yield sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def db_proxy(clean_db: None, database_url: str) -> Iterator[TcpProxy]:
    """The job store, as this process's sessions reach it, goes through a proxy."""
    proxy = TcpProxy.for_url(database_url).start()
    saved = os.environ["RELAYTUNE_DATABASE_URL"]
    os.environ["RELAYTUNE_DATABASE_URL"] = proxy.url_for(database_url)
    reset_caches()
    yield proxy
    os.environ["RELAYTUNE_DATABASE_URL"] = saved
    reset_caches()
    proxy.close()


def _settings(**changes: Any) -> Settings:
    return get_settings().model_copy(update={"heartbeat_seconds": 0.2, **changes})


def _warmup_claim() -> runs.Claim:
    """A running warmup, its preprocess done."""
    job_id = submit(new_tenant())
    complete(claim(job_id, "preprocess"))
    return claim(job_id, "warmup")


def _checkpoint_dir(tmp_path: Path) -> Path:
    local = tmp_path / "step-3"
    local.mkdir()
    (local / "state.pt").write_bytes(b"state")
    (local / "manifest.json").write_text('{"step": 3}')
    return local


def test_a_checkpoint_record_waits_out_a_database_outage(
    db_proxy: TcpProxy,
    direct: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tmp_path: Path,
) -> None:
    warmup = _warmup_claim()
    key = f"{warmup.run_prefix}/step-3"
    record = runs.record_checkpoint
    tries: list[int] = []

    def store_back_at_the_second_try(*args: Any, **kwargs: Any) -> None:
        tries.append(len(tries) + 1)
        if len(tries) == 2:
            db_proxy.restore()
        record(*args, **kwargs)

    monkeypatch.setattr(runs, "record_checkpoint", store_back_at_the_second_try)
    with Reporter(warmup, get_store(), _settings()) as reporter:
        db_proxy.cut()
        reporter.checkpoint(_checkpoint_dir(tmp_path), key, kind="step", step=3)
        assert not reporter.lease_lost.is_set()
    assert tries == [1, 2]  # the first try met the outage
    with direct() as session:
        row = session.scalars(select(Checkpoint).where(Checkpoint.key == key)).one()
        assert (row.phase, row.attempt, row.step) == ("warmup", 1, 3)
        phase = session.scalars(
            select(Phase).where(Phase.job_id == warmup.job_id, Phase.name == "warmup")
        ).one()
        assert phase.resume_key == key


def test_progress_goes_on_through_a_database_outage_and_is_written_when_it_is_back(
    db_proxy: TcpProxy,
    direct: sessionmaker[Session],
    recorded_dispatch: dispatch.RecordingDispatcher,
) -> None:
    warmup = _warmup_claim()

    def recorded_step() -> int | None:
        with direct() as session:
            return session.scalars(
                select(Phase.step).where(Phase.job_id == warmup.job_id, Phase.name == "warmup")
            ).one()

    with Reporter(warmup, get_store(), _settings()) as reporter:
        reporter.progress(1, 1000, 0, {"loss": 1.0})
        db_proxy.cut()
        for step in (2, 3):  # the training loop is not held up, nor told to stop
            reporter.progress(step, 1000, 0, {"loss": 1.0 / step})
            assert not reporter.should_stop()
        assert recorded_step() == 1
        db_proxy.restore()
        step = 3
        deadline = time.monotonic() + 60
        while recorded_step() != step and time.monotonic() < deadline:
            step += 1
            reporter.progress(step, 1000, 0, {"loss": 1.0 / step})
            time.sleep(0.1)
        assert recorded_step() == step
    with direct() as session:
        logged = [
            e.data["step"]
            for e in session.scalars(
                select(Event)
                .where(Event.job_id == warmup.job_id, Event.type == "metrics")
                .order_by(Event.id)
            )
        ]
    assert logged[0] == 1 and logged[-1] == step


def test_a_store_out_of_reach_for_the_whole_lease_ends_the_run(
    db_proxy: TcpProxy,
    recorded_dispatch: dispatch.RecordingDispatcher,
    tmp_path: Path,
) -> None:
    warmup = _warmup_claim()
    with Reporter(warmup, get_store(), _settings(lease_seconds=2)) as reporter:
        db_proxy.cut()
        with pytest.raises(LeaseLost):
            reporter.checkpoint(
                _checkpoint_dir(tmp_path), f"{warmup.run_prefix}/step-3", kind="step", step=3
            )
        assert reporter.lease_lost.is_set() and reporter.should_stop()


def test_a_run_whose_phase_was_reaped_before_its_final_write_says_so_in_one_line(
    clean_db: None,
    recorded_dispatch: dispatch.RecordingDispatcher,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job_id = submit(new_tenant())

    def overtaken(claim_: runs.Claim, *_: Any) -> tuple[str, dict[str, Any]]:
        expire_lease(job_id, "preprocess")  # the worker stalled past its lease ...
        assert run_reaper() == 1  # ... and the reaper queued attempt 2 meanwhile
        return claim_.run_prefix, {}

    monkeypatch.setattr(runner, "ensure_base_model", lambda *_, **__: "")
    monkeypatch.setitem(runner.PHASE_RUNNERS, "preprocess", overtaken)
    with caplog.at_level(logging.INFO, logger="worker"):
        runner.run_phase(
            {"job_id": job_id, "phase": "preprocess", "attempt": 1, "pool": "t4"}, worker_id="w1"
        )
    lost = [r for r in caplog.records if "lost its lease" in r.getMessage()]
    assert len(lost) == 1
    assert f"job {job_id} phase preprocess attempt 1" in lost[0].getMessage()
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.WARNING)
