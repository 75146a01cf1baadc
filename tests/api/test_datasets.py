from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from orchestrator.db import session_scope
from orchestrator.models import Dataset
from orchestrator.storage import get_store
from tests.factories import dataset_zip, png_bytes, zip_folder

QA = {"question": "Which part is abnormal?", "answer": "the capacitor, top right"}


def _upload(client: TestClient, data: bytes):  # type: ignore[no-untyped-def]
    return client.post("/v1/datasets", files={"file": ("data.zip", data, "application/zip")})


def _nothing_stored() -> None:
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Dataset)) == 0
    assert get_store().list("datasets/") == []


def test_upload_of_the_example_is_summarised(client: TestClient, example_dir) -> None:  # type: ignore[no-untyped-def]
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
        (dataset_zip({"a.png": QA, "gone.png": QA}, {"a.png": png_bytes()}), "missing_image",
         "gone.png"),
        (dataset_zip({"a.png": QA}, {"a.png": b"not an image"}), "invalid_image", "a.png"),
        (dataset_zip({"a.png": QA}, raw_annotations=b"{not json"), "invalid_json",
         "annotations.json"),
        (dataset_zip({"a.png": {"question": " ", "answer": "x"}}), "empty_question",
         "a.png.question"),
        (dataset_zip({"a.png": [QA, {"question": "q", "answer": ""}]}), "empty_answer",
         "a.png[1].answer"),
        (b"PK but not a zip", "invalid_dataset", "file"),
    ],
    ids=["no-annotations", "missing-image", "not-an-image", "bad-json", "empty-question",
         "empty-answer-in-list", "not-a-zip"],
)
def test_bad_upload_is_rejected_and_leaves_nothing(client: TestClient, data: bytes, code: str,
                                                   param: str) -> None:
    response = _upload(client, data)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["param"] == param
    assert error["message"]
    _nothing_stored()


def test_upload_needs_an_api_key(client: TestClient) -> None:
    response = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())},
                           headers={"Authorization": "Bearer rt_wrong"})
    assert response.status_code == 401
    assert response.json()["error"]["param"] == "Authorization"
