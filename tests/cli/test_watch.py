"""Watching a job: progress bars in 80 columns, the live event stream and its fallback,
Ctrl-C."""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

from services.cli import client as client_module
from services.cli import jobs as jobs_module
from services.cli.client import Client
from services.cli.main import app
from services.cli.progress import Board, PhaseProgress
from services.cli.watch import EventFeed, follow

NOW = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)


def _at(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).isoformat()


def _phase(
    name: str, pool: str, status: str, step: int, epoch: int, **extra: Any
) -> dict[str, Any]:
    phase = {
        "name": name,
        "pool": pool,
        "gpu_model": "A100-80GB",
        "status": status,
        "status_detail": None,
        "attempt": 1,
        "progress": {"step": step, "total_steps": 24000, "epoch": epoch},
        "cost": {"amount": "12345.678912", "currency": "CNY"},
        "started_at": _at(3 * 3600 + 61) if status != "queued" else None,
        "finished_at": _at(30) if status in ("succeeded", "failed") else None,
        "estimate": None,
    }
    return phase | extra


def _job(status: str = "running", **phases: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "5d0c4f1e-7a7e-4a53-9d3c-0a4c9c1d2e3f",
        "status": status,
        "dataset_id": "d",
        "base_model": "tiny",
        "hyperparameters": {"total_epochs": 12, "warmup_epochs": 4},
        "cost": {"amount": "37037.036736", "currency": "CNY"},
        "error": None,
        "phases": [
            phases.get("preprocess") or _phase("preprocess", "t4-spot-pool", "succeeded", 0, 0),
            phases.get("warmup") or _phase("warmup", "a10-pool", "succeeded", 8000, 3),
            phases.get("final") or _phase("final", "a100-80gb", "running", 13000, 6),
        ],
    }


def _metrics(
    event_id: int, phase: str, step: int, loss: float, seconds_ago: float
) -> dict[str, Any]:
    return {
        "id": event_id,
        "type": "metrics",
        "phase": phase,
        "attempt": 1,
        "data": {"step": step, "total_steps": 24000, "epoch": 6, "loss": loss},
        "created_at": _at(seconds_ago),
    }


def _render(job: dict[str, Any], board: Board) -> list[str]:
    bars = PhaseProgress(job["cost"]["currency"], auto_refresh=False)
    bars.show(job, board.rows(job, now=NOW))
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(bars.get_renderable())
    return out.getvalue().splitlines()


def test_one_bar_per_phase_fits_80_columns() -> None:
    board = Board()
    board.apply(_metrics(1, "final", 12000, 0.9, 200))
    board.apply(_metrics(2, "final", 13000, 0.4321, 100))  # 1000 steps in 100 s
    lines = _render(_job(), board)
    assert max(cell_len(line) for line in lines) <= 80, "\n".join(lines)
    header, final = lines[1], lines[4]
    for column in ("phase", "pool", "step", "epoch", "loss", "elapsed", "cost CNY", "eta"):
        assert column in header
    # final trains epochs 5-12 of 12: 16000 steps of its own, 5000 done; 11000 left at 0.1 s
    # a pool name longer than its column is cut short
    for expected in ("final", "a100-80…", "5000/16000", "7/12", "0.4321", "3:01:01", "0:18:20"):
        assert expected in final, final
    assert "8000/8000" in lines[3] and "done" in lines[3]
    assert "12345.68" in lines[3]  # the cost keeps the decimals its column has room for
    assert "cost so far 37037.0367 CNY" in lines[0]


def test_a_queued_and_a_preprocessing_phase() -> None:
    job = _job(
        preprocess=_phase(
            "preprocess",
            "t4",
            "running",
            0,
            0,
            estimate={"total_seconds": 3700},
            started_at=_at(3661),
        ),
        warmup=_phase("warmup", "a10", "queued", 0, 0),
        final=_phase("final", "a100", "pending", 0, 0),
    )
    lines = _render(job, Board())
    assert max(cell_len(line) for line in lines) <= 80
    assert "~0:00:39" in lines[2]  # planned 3700 s, 3661 s in
    assert "queued" in lines[3] and "pending" in lines[4]


class StreamingApi:
    """A job that ends after a few reads, and an event stream that breaks off once."""

    def __init__(self, *, stream: bool = True, outages: int = 0) -> None:
        self.stream = stream
        self.outages = outages  # job reads refused before the job answers again
        self.job_reads = 0
        self.requests: list[httpx.Request] = []
        self.reads = [
            _job(),
            _job(),
            _job("succeeded", final=_phase("final", "a100", "succeeded", 24000, 11)),
        ]
        self.events = [_metrics(i, "final", 12000 + i, 1.0 / i, 100 - i) for i in range(1, 5)]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path.endswith("/events"):
            if request.url.params.get("stream") == "true" and self.stream:
                after = int(request.headers.get("last-event-id", 0))
                # the first connection breaks off after two events; the second ends the stream
                batch = [e for e in self.events if e["id"] > after][: 2 if not after else None]
                body = "".join(
                    f": ping\n\nid: {e['id']}\nevent: {e['type']}\ndata: {json.dumps(e)}\n\n"
                    for e in batch
                )
                return httpx.Response(
                    200,
                    headers={"content-type": "text/event-stream"},
                    content=body + "event: end\ndata: {}\n\n",
                )
            after = int(request.url.params.get("after", 0))
            return httpx.Response(200, json=[e for e in self.events if e["id"] > after])
        self.job_reads += 1
        if self.job_reads == 2 and self.outages:
            self.outages -= 1
            self.job_reads -= 1
            raise httpx.ConnectError("connection refused", request=request)
        job = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
        return httpx.Response(200, json=job)


def _client(api: StreamingApi) -> Client:
    client = Client.__new__(Client)
    client.http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(api))
    return client


def _drain(feed: EventFeed, count: int) -> list[dict[str, Any]]:
    taken: list[dict[str, Any]] = []
    for _ in range(200):
        taken += feed.take()
        if len(taken) >= count:
            break
        time.sleep(0.05)
    return taken


def test_the_feed_follows_the_stream_and_resumes_after_the_last_event() -> None:
    api = StreamingApi()
    feed = EventFeed(_client(api), "j")
    feed.open()
    try:
        assert feed.streaming
        taken = _drain(feed, 4)
    finally:
        feed.close()
    assert [e["id"] for e in taken] == [1, 2, 3, 4]
    streams = [r for r in api.requests if r.url.params.get("stream") == "true"]
    assert streams[0].headers.get("last-event-id") is None
    assert streams[1].headers["last-event-id"] == "2"
    assert not [r for r in api.requests if r.url.params.get("stream") is None]  # no polling


def test_the_feed_polls_where_the_api_has_no_stream() -> None:
    api = StreamingApi(stream=False)
    feed = EventFeed(_client(api), "j")
    feed.open()
    assert not feed.streaming
    assert [e["id"] for e in feed.take()] == [1, 2, 3, 4]
    assert feed.take() == []
    assert api.requests[-1].url.params["after"] == "4"


def test_follow_on_a_terminal_draws_bars_until_the_job_ends() -> None:
    out = io.StringIO()
    console = Console(file=out, width=80, force_terminal=True, color_system=None)
    job = follow(_client(StreamingApi()), "j", console, interval=0)
    assert job["status"] == "succeeded"
    assert "0.2500" in out.getvalue()  # the loss of the last event streamed
    assert "succeeded, cost 37037.0367 CNY" in out.getvalue()
    assert "total cost" in out.getvalue()


def test_a_watch_rides_out_an_api_restart() -> None:
    api = StreamingApi(stream=False, outages=2)
    job = follow(_client(api), "j", Console(file=io.StringIO(), width=80), interval=0)
    assert job["status"] == "succeeded"
    assert api.outages == 0


def test_ctrl_c_leaves_the_job_running_and_says_how_to_reattach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*_: Any, **__: Any) -> dict[str, Any]:
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs_module, "follow", interrupted)
    monkeypatch.setattr(client_module.Client, "__init__", _init_unused)
    result = CliRunner().invoke(
        app, ["jobs", "watch", "j-1", "--api-key", "k", "--url", "http://gpu-box:9000"]
    )
    assert result.exit_code == 130
    assert "job j-1 continues" in result.output
    assert "relaytune jobs watch j-1 --url http://gpu-box:9000" in result.output


def _init_unused(self: Client, base_url: str, api_key: str, timeout: float = 60.0) -> None:
    self.http = httpx.Client(base_url=base_url)


def test_the_feed_takes_a_late_event_below_ids_already_seen_once() -> None:
    feed = EventFeed(_client(StreamingApi()), "j")
    feed.streaming = True  # as if a stream delivered them
    for event_id in (1, 3, 2, 3):
        feed._put(_metrics(event_id, "final", 100 + event_id, 1.0, 10))
    assert [e["id"] for e in feed.take()] == [1, 3, 2]
    assert feed.last_id == 3
