"""GET /v1/files/{id}/content through the official `openai` package: the stored bytes, always
a zip, only to the tenant that owns the file."""

from __future__ import annotations

import io
import zipfile

import openai
import pytest
from fastapi.testclient import TestClient

from orchestrator.layout import upload_key
from orchestrator.storage import get_store
from tests.api.openai_helpers import chat_jsonl, openai_client
from tests.factories import dataset_zip, png_bytes
from tests.orchestrator import relay_helpers as relay


def test_a_zip_comes_back_byte_for_byte_under_its_name(client: TestClient) -> None:
    api = openai_client(client)
    uploaded = dataset_zip()
    file_id = api.files.create(file=("boards.zip", uploaded), purpose="fine-tune").id

    content = api.files.content(file_id)
    assert content.content == uploaded
    assert content.response.headers["content-type"] == "application/zip"
    assert content.response.headers["content-disposition"] == 'attachment; filename="boards.zip"'
    assert content.response.headers["content-length"] == str(len(uploaded))
    # The deprecated call reads the same route, as text.
    with pytest.warns(DeprecationWarning):
        assert api.files.retrieve_content(file_id).startswith("PK")


def test_a_jsonl_comes_back_as_the_zip_it_is_stored_as(client: TestClient) -> None:
    api = openai_client(client)
    uploaded = api.files.create(file=("train.jsonl", chat_jsonl(2)), purpose="fine-tune")

    content = api.files.content(uploaded.id)
    assert content.content == get_store().get_bytes(upload_key(uploaded.id))
    assert len(content.content) == uploaded.bytes
    # Its headers say zip, not JSONL: the name gets .zip added.
    assert content.response.headers["content-type"] == "application/zip"
    assert content.response.headers["content-disposition"] == (
        'attachment; filename="train.jsonl.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(content.content)) as archive:
        assert sorted(archive.namelist()) == [
            "images/line1-image0.png",
            "images/line2-image0.png",
            "train.jsonl",
        ]
        assert archive.read("images/line1-image0.png") == png_bytes((0, 120, 40))


def test_a_name_outside_ascii_is_sent_exactly_beside_an_ascii_stand_in(
    client: TestClient,
) -> None:
    api = openai_client(client)
    # Header values are Latin-1: the euro sign goes in filename* only.
    uploaded = dataset_zip()
    file_id = api.files.create(file=("Données €.zip", uploaded), purpose="fine-tune").id
    assert api.files.retrieve(file_id).filename == "Données €.zip"

    content = api.files.content(file_id)
    assert content.content == uploaded
    assert content.response.headers["content-disposition"] == (
        "attachment; filename=\"Donn_es _.zip\"; filename*=UTF-8''Donn%C3%A9es%20%E2%82%AC.zip"
    )


def test_another_tenants_file_is_not_found(client: TestClient) -> None:
    other_file = relay.job(relay.submit(relay.new_tenant("other"))).dataset_id
    with pytest.raises(openai.NotFoundError) as excinfo:
        openai_client(client).files.content(other_file)
    assert isinstance(excinfo.value.body, dict)
    assert (excinfo.value.body["code"], excinfo.value.body["param"]) == ("not_found", "file_id")
    assert other_file in excinfo.value.body["message"]


def test_a_deleted_file_is_not_found(client: TestClient) -> None:
    api = openai_client(client)
    file_id = api.files.create(file=("t.jsonl", chat_jsonl(1)), purpose="fine-tune").id
    api.files.delete(file_id)
    with pytest.raises(openai.NotFoundError):
        api.files.content(file_id)


def test_a_deleted_file_a_job_still_names_is_not_found(client: TestClient) -> None:
    api = openai_client(client)
    file_id = api.files.create(file=("t.jsonl", chat_jsonl(3)), purpose="fine-tune").id
    job = api.fine_tuning.jobs.create(model="tiny", training_file=file_id)
    api.fine_tuning.jobs.cancel(job.id)
    api.files.delete(file_id)  # the row stays, for the job's record
    with pytest.raises(openai.NotFoundError):
        api.files.content(file_id)


def test_a_file_whose_object_went_meanwhile_is_not_found(client: TestClient) -> None:
    # A delete that commits between reading the row and fetching the object.
    api = openai_client(client)
    file_id = api.files.create(file=("boards.zip", dataset_zip()), purpose="fine-tune").id
    get_store().delete(upload_key(file_id))
    with pytest.raises(openai.NotFoundError) as excinfo:
        api.files.content(file_id)
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["param"] == "file_id"
