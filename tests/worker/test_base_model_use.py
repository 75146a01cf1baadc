"""How workers use base models: the hub stays offline, failures name models, not paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from orchestrator.settings import Settings
from worker.celery_app import keep_hub_offline


def test_workers_keep_the_hub_offline_unless_downloads_are_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    keep_hub_offline(Settings(data_dir=tmp_path, allow_hub_downloads=True))
    assert "HF_HUB_OFFLINE" not in os.environ
    keep_hub_offline(Settings(data_dir=tmp_path))
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_the_worker_app_is_offline_before_the_hub_library_loads(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["RELAYTUNE_DATA_DIR"] = str(tmp_path)
    probe = "import worker.celery_app, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True"


def test_a_failure_shows_the_model_by_name_not_by_server_path(tmp_path: Path) -> None:
    from worker.runner import public_error

    settings = Settings(data_dir=tmp_path, model_root=tmp_path / "models")
    exc = OSError(
        f"{tmp_path}/models/my-vlm does not appear to have a file named "
        "model.safetensors; read from <_io.BufferedReader object at 0x7f00deadbeef>"
    )
    message = public_error(exc, settings)
    assert message == (
        "OSError: my-vlm does not appear to have a file named model.safetensors; read from"
    )
