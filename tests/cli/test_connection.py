"""Where the client commands look for the API, and one line when nothing answers there."""

from __future__ import annotations

import importlib.metadata
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.settings import get_settings
from services.cli.main import app
from tests.factories import dataset_zip


def _dead_url() -> str:
    """A local port where nothing listens: connecting is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _refused(url: str) -> str:
    return f"relaytune: the API is not reachable at {url}; start it with `relaytune up`"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The data dir `relaytune up` would have written, for this test only."""
    monkeypatch.setenv("RELAYTUNE_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def data_zip(tmp_path: Path) -> Path:
    path = tmp_path / "data.zip"
    path.write_bytes(dataset_zip())
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["jobs", "list"],
        ["jobs", "show", "j"],
        ["jobs", "watch", "j"],
        ["jobs", "cancel", "j"],
        ["jobs", "requeue", "j", "final"],
        ["jobs", "events", "j"],
        ["jobs", "download", "j"],
        ["datasets", "list"],
        ["datasets", "delete", "d"],
        ["datasets", "upload", "DATA"],
        ["submit", "DATA", "--wait"],
        ["estimate", "--dataset", "d"],
    ],
)
def test_a_refused_connection_is_one_line_and_status_2(
    command: list[str], data_zip: Path, data_dir: Path
) -> None:
    url = _dead_url()
    args = [str(data_zip) if a == "DATA" else a for a in command]
    result = CliRunner().invoke(app, [*args, "--url", url, "--api-key", "k"])
    assert result.exit_code == 2
    assert result.output.splitlines() == [_refused(url)]


def test_the_url_comes_from_the_option_the_environment_or_what_up_wrote(data_dir: Path) -> None:
    written, from_env, from_option = _dead_url(), _dead_url() + "/", _dead_url()
    runner = CliRunner()
    base = ["jobs", "list", "--api-key", "k"]

    result = runner.invoke(app, base, env={"RELAYTUNE_URL": None, "RELAYTUNE_API_URL": None})
    assert result.output.splitlines() == [_refused("http://127.0.0.1:7860")]

    (data_dir / "api-url").write_text(written + "\n")  # as `relaytune up --port` leaves it
    result = runner.invoke(app, base, env={"RELAYTUNE_URL": None, "RELAYTUNE_API_URL": None})
    assert result.output.splitlines() == [_refused(written)]

    result = runner.invoke(app, base, env={"RELAYTUNE_URL": from_env})
    assert result.output.splitlines() == [_refused(from_env.rstrip("/"))]

    result = runner.invoke(app, [*base, "--url", from_option], env={"RELAYTUNE_URL": from_env})
    assert result.output.splitlines() == [_refused(from_option)]


def test_the_key_comes_from_what_up_wrote(data_dir: Path) -> None:
    result = CliRunner().invoke(app, ["jobs", "list"], env={"RELAYTUNE_API_KEY": None})
    assert result.exit_code == 2
    assert "no API key" in result.output

    (data_dir / "api-key").write_text("rt_written\n")
    url = _dead_url()
    result = CliRunner().invoke(app, ["jobs", "list", "--url", url])
    assert result.output.splitlines() == [_refused(url)]


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"relaytune, version {importlib.metadata.version('relaytune')}\n"
