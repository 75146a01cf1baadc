"""While `submit --wait` follows a job, a queued phase whose pool has no live worker is named."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from services.cli.client import StreamUnavailable
from services.cli.waiting import unserved_phases
from services.cli.watch import follow


def _phase(name: str, pool: str, status: str, detail: str | None = None) -> dict[str, Any]:
    return {
        "name": name,
        "pool": pool,
        "gpu_model": "GPU",
        "status": status,
        "status_detail": detail,
        "attempt": 1,
        "started_at": None,
        "finished_at": None,
        "progress": {"step": 0, "total_steps": 0, "epoch": 0},
        "cost": {"amount": "0", "currency": "CNY"},
    }


def _job(status: str, *phases: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "job-1",
        "status": status,
        "phases": list(phases),
        "cost": {"amount": "0", "currency": "CNY"},
    }


def _pools(**live: int) -> list[dict[str, Any]]:
    return [{"name": name, "live_workers": count} for name, count in live.items()]


QUEUED_ON_T4 = _job(
    "queued", _phase("preprocess", "t4", "queued"), _phase("warmup", "a10", "pending")
)


def test_a_queued_phase_on_a_pool_without_live_workers_is_named_with_the_fix() -> None:
    warnings = unserved_phases(QUEUED_ON_T4, _pools(t4=0, a10=1))
    assert list(warnings) == ["preprocess"]
    assert "pool t4" in warnings["preprocess"]
    assert "relaytune worker --pool t4" in warnings["preprocess"]


def test_pending_phases_and_served_pools_draw_no_warning() -> None:
    assert unserved_phases(QUEUED_ON_T4, _pools(t4=1, a10=0)) == {}


def test_before_the_server_saw_any_worker_only_its_own_verdict_counts() -> None:
    # Before the reaper's first round every pool shows no worker: that says nothing yet.
    assert unserved_phases(QUEUED_ON_T4, _pools(t4=0, a10=0)) == {}
    waiting = _job("queued", _phase("preprocess", "t4", "queued", "waiting_for_worker"))
    assert list(unserved_phases(waiting, _pools(t4=0, a10=0))) == ["preprocess"]
    assert list(unserved_phases(waiting, None)) == ["preprocess"]


class FakeClient:
    """A job that waits on an unserved pool for two polls, then runs and succeeds."""

    def __init__(self) -> None:
        self.jobs = [
            QUEUED_ON_T4,
            QUEUED_ON_T4,
            _job(
                "succeeded",
                _phase("preprocess", "t4", "succeeded"),
                _phase("warmup", "a10", "succeeded"),
            ),
        ]
        self.pool_requests = 0

    def job(self, _: str) -> dict[str, Any]:
        return self.jobs.pop(0)

    def pools(self) -> list[dict[str, Any]]:
        self.pool_requests += 1
        return _pools(t4=0, a10=1)

    def open_event_stream(self, _: str) -> None:
        raise StreamUnavailable("an API without a stream")

    def events(self, *_: Any, **__: Any) -> list[dict[str, Any]]:
        return []


def test_submit_wait_warns_once_while_the_phase_waits_for_a_worker(
    capsys: pytest.CaptureFixture[str],
) -> None:
    client = FakeClient()
    job = follow(client, "job-1", Console(width=120), interval=0)  # type: ignore[arg-type]
    assert job["status"] == "succeeded"
    output = capsys.readouterr().out
    assert output.count("warning: preprocess is queued on pool t4") == 1, output
    assert client.pool_requests == 2
