"""Client commands run against the in-process API of tests/api."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli import client as client_module
from tests.api.conftest import client, dataset_id  # noqa: F401


@pytest.fixture
def cli_through(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> CliRunner:  # noqa: F811
    """The CLI's HTTP client talks to the in-process API."""

    def init(
        self: client_module.Client, base_url: str, api_key: str, timeout: float = 60.0
    ) -> None:
        self.http = client

    monkeypatch.setattr(client_module.Client, "__init__", init)
    return CliRunner()
