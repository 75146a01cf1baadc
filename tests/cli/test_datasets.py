"""`relaytune datasets ...` and `relaytune submit PATH`: a folder, a zip or a .jsonl."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from services.cli import client as client_module
from services.cli.main import app
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


class FakeApi:
    """The data set routes as announced (list like GET /v1/jobs, delete answers 204, a .jsonl
    goes to POST /v1/files), for the client's side of them."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if request.method == "GET" and path == "/v1/datasets":
            item = {"id": "ds-1", "format": "annotations_json", "num_samples": 3,
                    "num_images": 3, "bytes": 1234, "filename": "d.zip",
                    "created_at": "2026-01-02T03:04:05Z"}  # fmt: skip
            return httpx.Response(200, json={"data": [item], "total": 7, "limit": 5, "offset": 2})
        if request.method == "DELETE" and path == "/v1/datasets/ds-1":
            return httpx.Response(204)
        if request.method == "DELETE":
            error = {"code": "dataset_in_use", "message": "a running job uses it", "param": "id"}
            return httpx.Response(409, json={"error": error})
        if request.method == "POST" and path == "/v1/files":
            file = {"id": "file-1", "object": "file", "bytes": 99, "filename": "chat.jsonl",
                    "purpose": "fine-tune", "created_at": 1}  # fmt: skip
            return httpx.Response(200, json=file)
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


@pytest.fixture
def fake_api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    api = FakeApi()

    def init(
        self: client_module.Client, base_url: str, api_key: str, timeout: float = 60.0
    ) -> None:
        self.http = httpx.Client(base_url=base_url, transport=httpx.MockTransport(api))

    monkeypatch.setattr(client_module.Client, "__init__", init)
    return api


def test_list_and_delete(fake_api: FakeApi) -> None:
    runner = CliRunner()
    result = runner.invoke(
        app, ["datasets", "list", "--limit", "5", "--offset", "2", "--api-key", "k"]
    )
    assert result.exit_code == 0, result.output
    assert "ds-1" in result.output and "annotations_json" in result.output
    assert "data sets 3-3 of 7" in result.output
    assert dict(fake_api.requests[0].url.params) == {"limit": "5", "offset": "2"}

    result = runner.invoke(app, ["datasets", "delete", "ds-1", "--api-key", "k"])
    assert result.exit_code == 0 and "deleted dataset ds-1" in result.output
    result = runner.invoke(app, ["datasets", "delete", "ds-2", "--api-key", "k"])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["relaytune: 409 dataset_in_use: a running job uses it"]


def test_a_jsonl_goes_to_the_files_route(fake_api: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": []}) + "\n")
    result = CliRunner().invoke(app, ["datasets", "upload", str(path), "--api-key", "k"])
    assert result.exit_code == 0, result.output
    assert "dataset file-1: 99 bytes" in result.output
    request = fake_api.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/files")
    body = request.read()
    assert b'name="purpose"\r\n\r\nfine-tune' in body
    assert b'filename="chat.jsonl"' in body
