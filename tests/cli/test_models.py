"""`relaytune models add | list | remove` against the job store and the object store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from orchestrator import storage
from orchestrator.db import session_scope
from orchestrator.layout import model_prefix
from orchestrator.model_registry import find_model, inspect_model_dir
from services.cli.main import app


def _invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_add_list_remove(clean_db: None, tiny_model_dir: str) -> None:
    code, output = _invoke("models", "add", "reg-tiny", "--from", tiny_model_dir)
    assert code == 0, output
    assert "registered reg-tiny: Qwen3VLForConditionalGeneration" in output
    with session_scope() as session:
        model = find_model(session, "reg-tiny")
        assert model is not None
        digest, count = model.digest, len(model.files)
    assert f"{count} uploaded, 0 already stored" in output
    assert len(storage.get_store().list(model_prefix(digest) + "/")) == count

    code, output = _invoke("models", "add", "reg-tiny", "--from", tiny_model_dir)
    assert code == 0, output
    assert f"0 uploaded, {count} already stored" in output

    code, output = _invoke("models", "list")
    assert code == 0, output
    assert "reg-tiny" in output and "Qwen3VLForConditionalGeneration" in output

    code, output = _invoke("models", "remove", "reg-tiny")
    assert code == 0, output
    assert storage.get_store().list(model_prefix(digest) + "/") == []
    code, output = _invoke("models", "remove", "reg-tiny")
    assert code == 1
    assert "no registered model 'reg-tiny'" in output


def test_add_refuses_a_directory_without_weights(clean_db: None, tmp_path: object) -> None:
    from pathlib import Path

    directory = Path(str(tmp_path))
    (directory / "config.json").write_text('{"model_type": "qwen3_vl"}')
    code, output = _invoke("models", "add", "x", "--from", str(directory))
    assert code == 1
    assert "holds no .safetensors weights" in output


REVISION = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root: Path, tiny_model_dir: str) -> Path:
    """A Hugging Face cache holding the tiny model as `acme/tiny-vl` at REVISION, `main`
    pointing to it, plus files a model directory does not need."""
    repo = root / "models--acme--tiny-vl"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(tiny_model_dir, snapshot)
    (snapshot / "README.md").write_text("# tiny\n")
    (snapshot / "pytorch_model.bin").write_bytes(b"pickled")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root


def _offline_cli(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it, with the Hub out of reach."""
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_add_from_the_hub_cache_registers_only_the_model_files(
    clean_db: None, tiny_model_dir: str, tmp_path: Path
) -> None:
    cache = _hub_cache(tmp_path / "hub", tiny_model_dir)
    added = _offline_cli(cache, "models", "add", "hub-tiny", "--from-hub", "acme/tiny-vl")
    assert added.returncode == 0, added.stderr
    assert "registered hub-tiny: Qwen3VLForConditionalGeneration" in added.stdout
    with session_scope() as session:
        model = find_model(session, "hub-tiny")
        assert model is not None
        assert model.digest == inspect_model_dir(Path(tiny_model_dir)).digest  # same as --from

    again = _offline_cli(
        cache, "models", "add", "hub-tiny", "--from-hub", "acme/tiny-vl", "--revision", REVISION
    )
    assert again.returncode == 0, again.stderr
    assert "0 uploaded" in again.stdout


def test_add_from_the_hub_says_in_one_line_what_the_offline_cache_lacks(
    clean_db: None, tmp_path: Path
) -> None:
    missing = _offline_cli(tmp_path, "models", "add", "x", "--from-hub", "acme/absent")
    assert missing.returncode == 1
    error = missing.stderr.strip()
    assert error.count("\n") == 0 and "Traceback" not in error
    assert "acme/absent is not in the Hugging Face cache" in error
    assert "HF_HUB_OFFLINE" in error


def test_add_takes_exactly_one_source(tiny_model_dir: str) -> None:
    for args in ([], ["--from", tiny_model_dir, "--from-hub", "acme/tiny-vl"]):
        code, output = _invoke("models", "add", "x", *args)
        assert code == 2 and "exactly one of --from DIR and --from-hub ID" in output
    code, output = _invoke("models", "add", "x", "--from", tiny_model_dir, "--revision", "v1")
    assert code == 2 and "--revision goes with --from-hub" in output
