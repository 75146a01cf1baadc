"""`relaytune make-tiny-model` without a directory writes the default model where workers look
for it: workers never write it themselves."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from orchestrator.settings import get_settings
from services.cli.main import app


@pytest.fixture
def fresh_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Settings of a machine whose model root holds nothing yet; restored afterwards."""
    monkeypatch.setenv("RELAYTUNE_DATA_DIR", str(tmp_path / "rt"))
    monkeypatch.delenv("RELAYTUNE_MODEL_ROOT", raising=False)
    monkeypatch.delenv("RELAYTUNE_DEFAULT_BASE_MODEL", raising=False)
    get_settings.cache_clear()
    yield tmp_path / "rt" / "models"
    monkeypatch.undo()
    get_settings.cache_clear()


def test_make_tiny_model_writes_the_default_model_where_a_worker_loads_it(
    fresh_settings: Path,
) -> None:
    from worker.runner import ensure_base_model

    result = CliRunner().invoke(app, ["make-tiny-model"])
    assert result.exit_code == 0, result.output
    written = fresh_settings / "tiny-qwen3-vl"
    assert get_settings().default_model_dir == written
    assert ensure_base_model("tiny-qwen3-vl", get_settings()) == str(written)
