"""`relaytune estimate`: the plans side by side, from the API, in a table."""

from __future__ import annotations

from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli.main import app
from tests.factories import dataset_zip


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


def test_estimate_takes_a_validation_data_set_and_refuses_an_unknown_one(
    cli_through: CliRunner, client: TestClient, dataset_id: str
) -> None:
    uploaded = client.post("/v1/datasets", files={"file": ("v.zip", dataset_zip())})
    validation_id = uploaded.json()["id"]
    base = ["estimate", "--dataset", dataset_id, "--api-key", "k"]
    result = cli_through.invoke(
        app, [*base, "--validation-dataset", validation_id], terminal_width=200
    )
    assert result.exit_code == 0, result.output
    assert "relay" in result.output
    unknown = cli_through.invoke(app, [*base, "--validation-dataset", "nope"])
    assert unknown.exit_code != 0
    assert "404" in unknown.output and "nope not found" in unknown.output
