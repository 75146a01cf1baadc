"""`relaytune estimate`: the plans side by side, from the API, in a table."""

from __future__ import annotations

from click.testing import CliRunner

from services.cli.main import app


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
