from __future__ import annotations

import base64
import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.db import session_scope
from orchestrator.models import Dataset
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from tests.factories import dataset_zip, png_bytes, zip_folder

QA = {"question": "Which part is abnormal?", "answer": "the capacitor, top right"}


def _upload(client: TestClient, data: bytes) -> Any:
    return client.post("/v1/datasets", files={"file": ("data.zip", data, "application/zip")})


def _nothing_stored() -> None:
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert get_store().list("datasets/") == []


def test_upload_of_the_example_is_summarised(client: TestClient, example_dir: Path) -> None:
    response = _upload(client, zip_folder(example_dir))
    assert response.status_code == 201, response.text
    body = response.json()
    annotations = json.loads((example_dir / "annotations.json").read_text())
    assert body["format"] == "annotations_json"
    assert body["num_images"] == len(annotations)
    assert body["num_samples"] == len(annotations)
    assert get_store().exists(f"datasets/{body['id']}/upload.zip")


def test_zip_with_one_top_level_folder_and_pair_lists(client: TestClient) -> None:
    annotations = {"a.png": [QA, QA], "b.png": QA}
    response = _upload(client, dataset_zip(annotations, folder="my_data/"))
    assert response.status_code == 201, response.text
    assert response.json()["num_samples"] == 3
    assert response.json()["num_images"] == 2


@pytest.mark.parametrize(
    ("data", "code", "param"),
    [
        (dataset_zip(False, {"a.png": png_bytes()}), "missing_annotations", "file"),
        (
            dataset_zip({"a.png": QA, "gone.png": QA}, {"a.png": png_bytes()}),
            "missing_image",
            "gone.png",
        ),
        (dataset_zip({"a.png": QA}, {"a.png": b"not an image"}), "invalid_image", "a.png"),
        (
            dataset_zip({"a.png": QA}, raw_annotations=b"{not json"),
            "invalid_json",
            "annotations.json",
        ),
        (
            dataset_zip({"a.png": {"question": " ", "answer": "x"}}),
            "empty_question",
            "a.png.question",
        ),
        (
            dataset_zip({"a.png": [QA, {"question": "q", "answer": ""}]}),
            "empty_answer",
            "a.png[1].answer",
        ),
        (b"PK but not a zip", "invalid_dataset", "file"),
    ],
    ids=[
        "no-annotations",
        "missing-image",
        "not-an-image",
        "bad-json",
        "empty-question",
        "empty-answer-in-list",
        "not-a-zip",
    ],
)
def test_bad_upload_is_rejected_and_leaves_nothing(
    client: TestClient, data: bytes, code: str, param: str
) -> None:
    response = _upload(client, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    if "details" in error:  # row-level problems: the one found is also listed
        assert [(d["param"], d["code"]) for d in error["details"]] == [(param, code)]
    _nothing_stored()


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(r) for r in rows).encode()


def _messages_row(question: str, answer: str, images: list[str]) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ],
        "images": images,
    }


def test_messages_format_upload(client: TestClient) -> None:
    rows = [
        _messages_row("<image>Which part?", "the chip", ["images/a.png"]),
        _messages_row("<image><image>Same board?", "no", ["images/a.png", "images/b.png"]),
    ]
    data = _zip(
        {
            "set/train.jsonl": _jsonl(rows),
            "set/images/a.png": png_bytes(),
            "set/images/b.png": png_bytes((200, 0, 0)),
        }
    )
    response = _upload(client, data)
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["num_samples"], body["num_images"]) == ("messages", 2, 2)
    assert body["bytes"] == len(data)


def test_openai_chat_format_upload(client: TestClient) -> None:
    url = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Which part?"},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            },
            {"role": "assistant", "content": "the chip"},
        ]
    }
    response = _upload(client, _zip({"ft.jsonl": _jsonl([row, row, row])}))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["format"], body["num_samples"], body["num_images"]) == ("openai_chat", 3, 3)


def test_every_bad_row_is_named_and_nothing_is_stored(client: TestClient) -> None:
    rows = [
        _messages_row("<image>Q", "A", ["a.png"]),
        _messages_row("<image>Q", "", ["a.png"]),
        _messages_row("<image>Q", "A", ["gone.png"]),
        _messages_row("Q", "A", ["a.png"]),
    ]
    data = _zip({"d.jsonl": _jsonl(rows) + b"\n{oops", "a.png": png_bytes()})
    response = _upload(client, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("empty_answer", "d.jsonl:2")
    assert [(d["param"], d["code"]) for d in error["details"]] == [
        ("d.jsonl:2", "empty_answer"),
        ("d.jsonl:3", "missing_image"),
        ("d.jsonl:4", "image_tag_mismatch"),
        ("d.jsonl:5", "invalid_json"),
    ]
    assert error["details"][3]["line"] == 5
    assert all(d["message"] for d in error["details"])
    _nothing_stored()


def test_upload_needs_an_api_key(client: TestClient) -> None:
    response = client.post(
        "/v1/datasets",
        files={"file": ("d.zip", dataset_zip())},
        headers={"Authorization": "Bearer rt_wrong"},
    )
    assert response.status_code == 401
    assert response.json()["error"]["param"] == "Authorization"


def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s uncompressed size, as its central directory states it, replaced."""
    at = data.index(b"PK\x01\x02")
    while data[at + 46 : at + 46 + len(name)] != name.encode():
        at = data.index(b"PK\x01\x02", at + 1)
    return data[: at + 24] + (size).to_bytes(4, "little") + data[at + 28 :]


def test_member_declaring_a_gigabyte_is_refused_by_name(client: TestClient) -> None:
    bomb = _declare_size(dataset_zip(), "images/case1.png", 1024**3)
    response = _upload(client, bomb)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("dataset_too_large", "images/case1.png")
    _nothing_stored()


def test_json_whitespace_bomb_is_refused(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "max_data_file_bytes", 64 * 1024)
    padded = b"{" + b" " * (1024 * 1024) + b'"a.png": ' + json.dumps(QA).encode() + b"}"
    response = _upload(client, dataset_zip(raw_annotations=padded, images={"a.png": png_bytes()}))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], error["param"]) == ("dataset_too_large", "annotations.json")
    _nothing_stored()
