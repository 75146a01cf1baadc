"""OpenAI's Files API through the official `openai` package: a file is a relaytune data set."""

from __future__ import annotations

import io
import json
import zipfile

import openai
import pytest
from fastapi.testclient import TestClient

from orchestrator.layout import upload_key
from orchestrator.settings import get_settings
from orchestrator.storage import get_store
from tests.api.openai_helpers import chat_jsonl, chat_row, data_url, openai_client
from tests.factories import dataset_zip, png_bytes
from tests.orchestrator import relay_helpers as relay


def test_a_jsonl_with_data_url_images_becomes_a_data_set(client: TestClient) -> None:
    api = openai_client(client)
    uploaded = api.files.create(file=("train.jsonl", chat_jsonl(3)), purpose="fine-tune")
    assert (uploaded.object, uploaded.purpose) == ("file", "fine-tune")
    assert uploaded.filename == "train.jsonl"
    assert isinstance(uploaded.created_at, int)
    # The same id is the data set's, in relaytune's own routes.
    dataset = client.get(f"/v1/datasets/{uploaded.id}").json()
    assert (dataset["format"], dataset["num_samples"], dataset["num_images"]) == (
        "openai_chat",
        3,
        3,
    )
    assert dataset["bytes"] == uploaded.bytes
    # Stored as its zip equivalent: the images decoded into files the rows name by path.
    with zipfile.ZipFile(io.BytesIO(get_store().get_bytes(upload_key(uploaded.id)))) as archive:
        names = sorted(archive.namelist())
        assert names == [
            "images/line1-image0.png",
            "images/line2-image0.png",
            "images/line3-image0.png",
            "train.jsonl",
        ]
        assert archive.read("images/line2-image0.png") == png_bytes((20, 120, 40))
        first = json.loads(archive.read("train.jsonl").decode().splitlines()[0])
    assert first["messages"][0]["content"][1]["image_url"]["url"] == "images/line1-image0.png"


def test_a_bad_line_is_refused_naming_it_and_nothing_is_stored(client: TestClient) -> None:
    api = openai_client(client)
    rows = [
        chat_row(data_url(png_bytes())),
        chat_row("https://example.com/a.png"),
        chat_row("data:image/png;base64,%%%"),
    ]
    body = "\n".join(json.dumps(r) for r in rows) + "\n{not json\n"
    with pytest.raises(openai.UnprocessableEntityError) as excinfo:
        api.files.create(file=("train.jsonl", body.encode()), purpose="fine-tune")
    error = excinfo.value.body
    assert isinstance(error, dict)
    assert [(d["param"], d["code"]) for d in error["details"]] == [
        ("train.jsonl:2", "unsupported_image_url"),
        ("train.jsonl:3#image0", "invalid_image"),
        ("train.jsonl:4", "invalid_json"),
    ]
    assert api.files.list().data == []


def test_a_jsonl_is_bounded_like_a_zip(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    api = openai_client(client)
    monkeypatch.setattr(get_settings(), "max_dataset_member_bytes", 100)
    with pytest.raises(openai.UnprocessableEntityError) as excinfo:
        api.files.create(file=("train.jsonl", chat_jsonl(2)), purpose="fine-tune")
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["code"] == "dataset_too_large"
    assert excinfo.value.body["param"] == "images/line1-image0.png"  # names the line

    monkeypatch.setattr(get_settings(), "max_dataset_members", 2)
    with pytest.raises(openai.UnprocessableEntityError) as excinfo:
        api.files.create(file=("train.jsonl", chat_jsonl(3)), purpose="fine-tune")
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["param"] == "line 3"


def test_zips_are_files_too_and_other_purposes_are_refused(client: TestClient) -> None:
    api = openai_client(client)
    uploaded = api.files.create(file=("boards.zip", dataset_zip()), purpose="fine-tune")
    assert client.get(f"/v1/datasets/{uploaded.id}").json()["format"] == "annotations_json"
    with pytest.raises(openai.UnprocessableEntityError, match="purpose must be fine-tune"):
        api.files.create(file=("a.jsonl", chat_jsonl(1)), purpose="assistants")


def test_list_pages_with_a_cursor_and_retrieve(client: TestClient) -> None:
    api = openai_client(client)
    ids = [
        api.files.create(file=(f"t{i}.jsonl", chat_jsonl(1)), purpose="fine-tune").id
        for i in range(3)
    ]
    first = api.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more
    # The package follows `after` page by page.
    assert [f.id for f in api.files.list(limit=1)] == ids[::-1]
    assert [f.id for f in api.files.list(order="asc")] == ids
    assert api.files.list(purpose="batch").data == []
    assert api.files.retrieve(ids[1]).filename == "t1.jsonl"


def test_delete_removes_the_data_set_and_its_objects(client: TestClient) -> None:
    api = openai_client(client)
    file_id = api.files.create(file=("t.jsonl", chat_jsonl(1)), purpose="fine-tune").id
    deleted = api.files.delete(file_id)
    assert (deleted.id, deleted.object, deleted.deleted) == (file_id, "file", True)
    with pytest.raises(openai.NotFoundError):
        api.files.retrieve(file_id)
    assert get_store().list(f"datasets/{file_id}/") == []
    assert client.get("/v1/datasets").json()["total"] == 0


def test_a_file_in_use_by_an_unfinished_job_is_not_deleted(client: TestClient) -> None:
    api = openai_client(client)
    file_id = api.files.create(file=("t.jsonl", chat_jsonl(3)), purpose="fine-tune").id
    job = api.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    with pytest.raises(openai.ConflictError, match=job.id):
        api.files.delete(file_id)
    assert client.delete(f"/v1/datasets/{file_id}").json()["error"]["code"] == "dataset_in_use"

    api.fine_tuning.jobs.cancel(job.id)
    assert api.files.delete(file_id).deleted
    # The job keeps its record (and its own copy of the data); the data set is gone for good.
    assert client.get(f"/v1/jobs/{job.id}").json()["dataset_id"] == file_id
    assert client.get(f"/v1/datasets/{file_id}").status_code == 404
    refused = client.post("/v1/jobs", json={"dataset_id": file_id, "base_model": "tiny"})
    assert refused.status_code == 404


def test_relaytune_lists_and_deletes_data_sets(client: TestClient) -> None:
    ids = [
        client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())}).json()["id"]
        for _ in range(3)
    ]
    page = client.get("/v1/datasets", params={"limit": 2, "offset": 1}).json()
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 1)
    assert [d["id"] for d in page["data"]] == ids[::-1][1:]

    assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 204
    assert client.delete(f"/v1/datasets/{ids[0]}").status_code == 404
    assert get_store().list(f"datasets/{ids[0]}/") == []
    assert [d["id"] for d in client.get("/v1/datasets").json()["data"]] == ids[:0:-1]


def test_a_dataset_of_another_tenant_is_not_found(client: TestClient) -> None:
    other_dataset = relay.job(relay.submit(relay.new_tenant("other"))).dataset_id
    assert client.delete(f"/v1/datasets/{other_dataset}").status_code == 404
    assert client.get(f"/v1/files/{other_dataset}").status_code == 404


def test_an_upper_case_extension_is_still_read_line_by_line(client: TestClient) -> None:
    uploaded = openai_client(client).files.create(
        file=("Train.JSONL", chat_jsonl(2)), purpose="fine-tune"
    )
    assert uploaded.filename == "Train.JSONL"
    assert client.get(f"/v1/datasets/{uploaded.id}").json()["num_samples"] == 2


def test_a_retried_create_with_an_idempotency_key_creates_once(client: TestClient) -> None:
    api = openai_client(client)
    once = {"Idempotency-Key": "upload-1"}
    files = [
        api.files.create(file=("t.jsonl", chat_jsonl(1)), purpose="fine-tune", extra_headers=once)
        for _ in range(2)
    ]
    assert files[0].id == files[1].id and len(api.files.list().data) == 1
    once = {"Idempotency-Key": "job-1"}
    jobs = [
        api.fine_tuning.jobs.create(model="tiny", training_file=files[0].id, extra_headers=once)
        for _ in range(2)
    ]
    assert jobs[0].id == jobs[1].id and len(api.fine_tuning.jobs.list().data) == 1
