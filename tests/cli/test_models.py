"""`relaytune models add | list | remove` against the job store and the object store."""

from __future__ import annotations

from click.testing import CliRunner

from orchestrator import storage
from orchestrator.db import session_scope
from orchestrator.layout import model_prefix
from orchestrator.model_registry import find_model
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
