"""`relaytune datasets ...` and `relaytune submit PATH`: a folder, a zip or a .jsonl."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli.main import app
from tests.api.openai_helpers import chat_jsonl
from tests.factories import dataset_zip, png_bytes


def _folder(tmp_path: Path, data: bytes) -> Path:
    folder = tmp_path / "boards"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        archive.extractall(folder)
    return folder


def test_upload_a_folder_and_a_zip(cli_through: CliRunner, tmp_path: Path) -> None:
    data = dataset_zip()
    (tmp_path / "d.zip").write_bytes(data)
    for path in (_folder(tmp_path, data), tmp_path / "d.zip"):
        result = cli_through.invoke(app, ["datasets", "upload", str(path), "--api-key", "k"])
        assert result.exit_code == 0, result.output
        assert "annotations_json, 3 samples, 3 images" in result.output


def test_a_rejected_data_set_prints_every_problem(cli_through: CliRunner, tmp_path: Path) -> None:
    images = {"case1.png": b"not a png", "case2.png": b"\x89PNG broken", "case3.png": png_bytes()}
    folder = _folder(tmp_path, dataset_zip(images=images))
    result = cli_through.invoke(app, ["submit", str(folder), "--api-key", "k"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("relaytune: 422 ") and "2 problems" in lines[0]
    assert any("case1.png" in line for line in lines[1:])
    assert any("case2.png" in line for line in lines[1:])
    assert "job" not in result.output  # nothing submitted


def test_submit_a_folder(cli_through: CliRunner, client: TestClient, tmp_path: Path) -> None:
    folder = _folder(tmp_path, dataset_zip())
    result = cli_through.invoke(
        app, ["submit", str(folder), "--api-key", "k", "--set", "total_epochs=6"]
    )
    assert result.exit_code == 0, result.output
    job_id = result.output.split("job ")[1].split()[0]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["hyperparameters"]["total_epochs"] == 6


def _uploaded_id(output: str) -> str:
    return output.split("dataset ")[1].split(":")[0]


def test_list_and_delete(cli_through: CliRunner, client: TestClient, tmp_path: Path) -> None:
    (tmp_path / "d.zip").write_bytes(dataset_zip())
    ids = []
    for _ in range(3):
        uploaded = cli_through.invoke(
            app, ["datasets", "upload", str(tmp_path / "d.zip"), "--api-key", "k"]
        )
        assert uploaded.exit_code == 0, uploaded.output
        ids.append(_uploaded_id(uploaded.output))

    result = cli_through.invoke(
        app, ["datasets", "list", "--limit", "1", "--offset", "1", "--api-key", "k"]
    )
    assert result.exit_code == 0, result.output
    assert "annotations_json" in result.output
    assert "data sets 2-2 of 3" in result.output
    assert sum(i in result.output for i in ids) == 1

    result = cli_through.invoke(app, ["datasets", "delete", ids[0], "--api-key", "k"])
    assert result.exit_code == 0 and f"deleted dataset {ids[0]}" in result.output
    assert client.get(f"/v1/datasets/{ids[0]}").status_code == 404

    # A data set an unfinished job trains on stays.
    job = client.post("/v1/jobs", json={"dataset_id": ids[1]})
    assert job.status_code == 201, job.text
    result = cli_through.invoke(app, ["datasets", "delete", ids[1], "--api-key", "k"])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("relaytune: 409 dataset_in_use:"), line
    assert client.get(f"/v1/datasets/{ids[1]}").status_code == 200


def test_a_jsonl_goes_to_the_files_route(
    cli_through: CliRunner, client: TestClient, tmp_path: Path
) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_bytes(chat_jsonl(rows=3))
    result = cli_through.invoke(app, ["datasets", "upload", str(path), "--api-key", "k"])
    assert result.exit_code == 0, result.output
    dataset_id = _uploaded_id(result.output)
    stored = client.get(f"/v1/datasets/{dataset_id}").json()
    assert (stored["format"], stored["num_samples"], stored["num_images"]) == (
        "openai_chat",
        3,
        3,
    )
    assert client.get(f"/v1/files/{dataset_id}").json()["purpose"] == "fine-tune"


def test_submit_with_a_validation_data_set(
    cli_through: CliRunner, client: TestClient, tmp_path: Path
) -> None:
    train = _folder(tmp_path, dataset_zip())
    held_out = tmp_path / "held-out.zip"
    held_out.write_bytes(dataset_zip())
    result = cli_through.invoke(
        app, ["submit", str(train), "--validation", str(held_out), "--api-key", "k"]
    )
    assert result.exit_code == 0, result.output
    uploaded = [_uploaded_id(line) for line in result.output.splitlines() if "dataset " in line]
    job_id = result.output.split("job ")[1].split()[0]
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert [job["dataset_id"], job["validation_dataset_id"]] == uploaded
