"""`relaytune estimate`: the plans side by side, from the API, in a table."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli import client as client_module
from services.cli.main import app


@pytest.fixture
def cli_through(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """The CLI's HTTP client talks to the in-process API."""

    def init(
        self: client_module.Client, base_url: str, api_key: str, timeout: float = 60.0
    ) -> None:
        self.http = client

    monkeypatch.setattr(client_module.Client, "__init__", init)
    return CliRunner()


def test_estimate_prints_the_plans_side_by_side(cli_through: CliRunner, dataset_id: str) -> None:
    result = cli_through.invoke(
        app,
        [
            "estimate",
            "--dataset",
            dataset_id,
            "--api-key",
            "k",
            "--base-model",
            "/models/Qwen3-VL-8B-Instruct",
            "--hp",
            "total_epochs=8",
            "--pools",
            "auto",
        ],
        terminal_width=200,
    )
    assert result.exit_code == 0, result.output
    for expected in (
        "estimate for qwen3-vl-8b",
        "auto",
        "relay",
        "all-a100",
        "cheapest",
        "does not fit",
        "saves",
        "chosen: auto",
    ):
        assert expected in result.output


def test_estimate_reports_api_errors(cli_through: CliRunner, dataset_id: str) -> None:
    result = cli_through.invoke(
        app, ["estimate", "--dataset", dataset_id, "--api-key", "k", "--base-model", "my-own-vlm"]
    )
    assert result.exit_code != 0
    assert "unknown_model" in result.output


def test_estimate_refuses_a_malformed_pools_option(cli_through: CliRunner) -> None:
    result = cli_through.invoke(
        app, ["estimate", "--dataset", "d", "--api-key", "k", "--pools", "warmup"]
    )
    assert result.exit_code == 2
    assert "PHASE=POOL" in result.output
