"""`relaytune jobs ...` against the real API, on jobs driven the way workers drive them."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from orchestrator import runs
from orchestrator.db import session_scope
from orchestrator.storage import get_store
from services.cli import client as client_module
from services.cli.main import app
from services.cli.watch import EventFeed
from tests.orchestrator.relay_helpers import claim, complete


def _job(client: TestClient, dataset_id: str) -> str:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _succeed(job_id: str, weights: bytes = b"weights") -> None:
    complete(claim(job_id, "preprocess"))
    complete(claim(job_id, "warmup"))
    final = claim(job_id, "final")
    get_store().put_bytes(f"{final.run_prefix}/adapter/adapter_model.safetensors", weights)
    complete(final)


def _fail(job_id: str) -> None:
    preprocess = claim(job_id, "preprocess")
    with session_scope() as session:
        runs.fail_phase(session, preprocess, code="phase_error", message="the GPU caught fire")


def _cli(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["jobs", *args, "--api-key", "k"], terminal_width=200)
    return result.exit_code, result.output


def test_list_and_show(cli_through: CliRunner, client: TestClient, dataset_id: str) -> None:
    first, second = _job(client, dataset_id), _job(client, dataset_id)
    complete(claim(first, "preprocess"))
    code, output = _cli(cli_through, "list")
    assert code == 0, output
    assert "of 2" in output
    assert output.index(second) < output.index(first)  # newest first
    code, output = _cli(cli_through, "list", "--status", "succeeded")
    assert code == 0 and first not in output and "of 0" in output

    code, output = _cli(cli_through, "show", first)
    assert code == 0, output
    for expected in (f"job {first}", "preprocess", "succeeded", "warmup", "queued", dataset_id):
        assert expected in output


def test_cancel_then_requeue_from_input(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    job_id = _job(client, dataset_id)
    code, output = _cli(cli_through, "cancel", job_id)
    assert code == 0, output
    assert f"job {job_id} cancelled" in output

    code, output = _cli(cli_through, "requeue", job_id, "preprocess", "--from", "input")
    assert code == 0, output
    assert "preprocess queued" in output
    assert client.get(f"/v1/jobs/{job_id}").json()["phases"][0]["status"] == "queued"

    code, output = _cli(cli_through, "requeue", job_id, "distill")
    assert code == 2 and "distill" in output  # not a phase: refused before any request


def test_events_lists_the_timeline(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    job_id = _job(client, dataset_id)
    complete(claim(job_id, "preprocess"))
    code, output = _cli(cli_through, "events", job_id)
    assert code == 0, output
    lines = output.splitlines()
    kinds = [line.split()[2] for line in lines]
    assert kinds[:4] == ["job_submitted", "phase_queued", "phase_started", "phase_succeeded"]
    assert "preprocess#1" in lines[2]

    first_id = lines[0].split()[0]
    code, output = _cli(cli_through, "events", job_id, "--after", first_id)
    assert code == 0 and "job_submitted" not in output and "phase_queued" in output


def test_download_writes_the_adapter(
    cli_through: CliRunner, client: TestClient, dataset_id: str, tmp_path: Path
) -> None:
    job_id = _job(client, dataset_id)
    target = tmp_path / "a.zip"
    code, output = _cli(cli_through, "download", job_id, "-o", str(target))
    assert code == 1
    assert "adapter_not_ready" in output and not target.exists()

    _succeed(job_id, b"trained")
    code, output = _cli(cli_through, "download", job_id, "-o", str(target))
    assert code == 0, output
    with zipfile.ZipFile(io.BytesIO(target.read_bytes())) as archive:
        assert archive.read("adapter_model.safetensors") == b"trained"
    assert not list(tmp_path.glob("*.partial"))


def test_watch_exits_zero_on_success_and_prints_the_phases(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    job_id = _job(client, dataset_id)
    _succeed(job_id)
    code, output = _cli(cli_through, "watch", job_id)
    assert code == 0, output
    assert "[succeeded]" in output and "total cost" in output


def test_watch_exits_non_zero_when_the_job_fails_or_is_cancelled(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    failed, cancelled = _job(client, dataset_id), _job(client, dataset_id)
    _fail(failed)
    code, output = _cli(cli_through, "watch", failed)
    assert code == 1
    assert f"job {failed} failed: " in output and "caught fire" in output

    _cli(cli_through, "cancel", cancelled)
    code, output = _cli(cli_through, "watch", cancelled)
    assert code == 1
    assert f"job {cancelled} cancelled" in output


def test_an_unknown_job_is_one_error_line(cli_through: CliRunner) -> None:
    code, output = _cli(cli_through, "show", "no-such-job")
    assert code == 1
    assert output.strip().startswith("relaytune: 404 not_found")
    assert len(output.strip().splitlines()) == 1


def test_download_merged_asks_for_the_merged_model(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    asked: list[httpx.Request] = []

    def api(request: httpx.Request) -> httpx.Response:
        asked.append(request)
        return httpx.Response(
            200, content=b"PK merged", headers={"content-type": "application/zip"}
        )

    def init(
        self: client_module.Client, base_url: str, api_key: str, timeout: float = 60.0
    ) -> None:
        self.http = httpx.Client(base_url=base_url, transport=httpx.MockTransport(api))

    monkeypatch.setattr(client_module.Client, "__init__", init)
    monkeypatch.chdir(tmp_path)
    code, output = _cli(CliRunner(), "download", "j-1", "--merged")
    assert code == 0, output
    assert (asked[0].url.path, dict(asked[0].url.params)) == (
        "/v1/jobs/j-1/adapter",
        {"kind": "merged"},
    )
    assert (tmp_path / "relaytune-j-1-merged.zip").read_bytes() == b"PK merged"


def test_watch_follows_the_live_event_stream(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    job_id = _job(client, dataset_id)
    _succeed(job_id)
    cli_client = client_module.Client("http://testserver", "k")  # the in-process API
    feed = EventFeed(cli_client, job_id)
    feed.open()
    try:
        assert feed.streaming
        types: list[str] = []
        for _ in range(100):
            types += [e["type"] for e in feed.take()]
            if "job_succeeded" in types:
                break
            time.sleep(0.1)
    finally:
        feed.close()
    assert types[0] == "job_submitted" and types[-1] == "job_succeeded"
