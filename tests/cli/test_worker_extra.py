"""Worker-only commands on an install without the worker extra: one line naming what to
install, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# torch set to None in sys.modules is how Python spells "not installed": importing it raises.
WITHOUT_TORCH = (
    "import sys; sys.modules['torch'] = None; "
    "from services.cli.main import app; app(prog_name='relaytune')"
)


@pytest.mark.parametrize(
    "args",
    [
        ["worker", "--pool", "t4"],
        ["make-tiny-model", "model"],
        ["up", "--port", "0"],
    ],
    ids=lambda args: args[0],
)
def test_a_worker_command_without_torch_says_which_extra_to_install(
    args: list[str], tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "RELAYTUNE_DATA_DIR": str(tmp_path / "rt"),
        "RELAYTUNE_BROKER_URL": "redis://127.0.0.1:1/0",
    }
    for name in ("RELAYTUNE_DATABASE_URL", "RELAYTUNE_S3_ENDPOINT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "pip install 'relaytune[worker]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "rt").exists() and not (tmp_path / "model").exists()  # nothing begun
