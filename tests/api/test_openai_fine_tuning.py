"""OpenAI's fine-tuning jobs API through the official `openai` package: the same jobs as
relaytune's own, driven through the relay the way workers drive them."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from fastapi.testclient import TestClient

from orchestrator import runs
from orchestrator.db import session_scope
from orchestrator.layout import CheckpointKind, checkpoint_key
from tests.api.openai_helpers import chat_jsonl, openai_client
from tests.orchestrator import relay_helpers as relay


@pytest.fixture
def api(client: TestClient) -> openai.OpenAI:
    """The official client on the test app, as the tenant of `client`."""
    return openai_client(client)


def upload(api: openai.OpenAI) -> str:
    return api.files.create(file=("train.jsonl", chat_jsonl(3)), purpose="fine-tune").id


def train(claim: runs.Claim, step: int, kind: CheckpointKind, metrics: dict[str, float]) -> None:
    """What a training worker reports: progress with its metrics, then a checkpoint."""
    with session_scope() as session:
        runs.report_progress(
            session,
            claim,
            step=step,
            total_steps=3,
            epoch=step - 1,
            metrics=metrics,
            lease_seconds=relay.LEASE,
        )
        runs.record_checkpoint(
            session,
            claim,
            kind=kind,
            key=checkpoint_key(claim.run_prefix, kind, step),
            step=step,
            size=1,
            manifest={"kind": kind, "step": step, **metrics},  # as the recipe writes it
        )


def run_relay(job_id: str) -> None:
    relay.complete(relay.claim(job_id, "preprocess"))
    warmup = relay.claim(job_id, "warmup")
    train(warmup, 2, CheckpointKind.EPOCH, {"loss": 0.9, "val_loss": 1.1, "token_accuracy": 0.4})
    relay.complete(warmup)
    final = relay.claim(job_id, "final")
    train(final, 3, CheckpointKind.FINAL, {"loss": 0.5, "val_loss": 0.7, "token_accuracy": 0.8})
    relay.complete(final)


def test_a_job_from_upload_to_checkpoints(client: TestClient, api: openai.OpenAI) -> None:
    file_id = upload(api)
    job = api.fine_tuning.jobs.create(
        model="tiny",
        training_file=file_id,
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 1}},
        },
        suffix="boards",
        seed=7,
        metadata={"team": "qa"},
    )
    assert (job.object, job.status, job.model, job.training_file) == (
        "fine_tuning.job",
        "queued",
        "tiny",
        file_id,
    )
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size, job.seed) == (3, 1, 7)
    assert job.hyperparameters.learning_rate_multiplier == 1.0
    assert job.fine_tuned_model is None and job.finished_at is None
    assert job.metadata == {"team": "qa"}
    # The same job in relaytune's own terms, here and in its extra field.
    own = client.get(f"/v1/jobs/{job.id}").json()
    hp = own["hyperparameters"]
    assert (hp["total_epochs"], hp["warmup_epochs"], hp["batch_size"], hp["seed"]) == (3, 2, 1, 7)
    assert own["dataset_id"] == file_id
    extra: dict[str, Any] = job.model_extra or {}
    assert [p["name"] for p in extra["relaytune"]["phases"]] == ["preprocess", "warmup", "final"]

    run_relay(job.id)

    done = api.fine_tuning.jobs.retrieve(job.id)
    assert done.status == "succeeded"
    assert done.fine_tuned_model == f"ft:tiny:boards:{job.id}"
    assert isinstance(done.finished_at, int) and done.finished_at >= done.created_at

    events = api.fine_tuning.jobs.list_events(job.id, limit=3)
    assert len(events.data) == 3 and events.has_more
    everything = list(api.fine_tuning.jobs.list_events(job.id, limit=3))  # follows `after`
    assert [int(e.id) for e in everything] == sorted((int(e.id) for e in everything), reverse=True)
    assert everything[0].data["relaytune_type"] == "job_succeeded"
    metrics = [e for e in everything if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [3, 2]
    assert "loss 0.5" in metrics[0].message
    assert {e.level for e in everything} == {"info"}
    assert len(everything) == len(client.get(f"/v1/jobs/{job.id}/events").json())

    checkpoints = api.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [3, 2]
    assert not checkpoints.has_more
    newest = checkpoints.data[0]
    assert newest.fine_tuned_model_checkpoint == f"ft:tiny:boards:{job.id}:ckpt-step-3"
    assert (newest.fine_tuning_job_id, newest.object) == (job.id, "fine_tuning.job.checkpoint")
    assert (newest.metrics.train_loss, newest.metrics.valid_loss) == (0.5, 0.7)
    assert newest.metrics.valid_mean_token_accuracy == 0.8
    second = api.fine_tuning.jobs.checkpoints.list(job.id, limit=1, after=newest.id)
    assert [c.step_number for c in second.data] == [2]


def test_list_pages_newest_first_and_cancel(client: TestClient, api: openai.OpenAI) -> None:
    file_id = upload(api)
    ids = [api.fine_tuning.jobs.create(model="tiny", training_file=file_id).id for _ in range(3)]
    # A job submitted through relaytune's own route is a fine-tuning job too.
    own = client.post("/v1/jobs", json={"dataset_id": file_id, "base_model": "tiny"})
    ids.append(own.json()["id"])
    page = api.fine_tuning.jobs.list(limit=3)
    assert [j.id for j in page.data] == ids[::-1][:3] and page.has_more
    assert [j.id for j in api.fine_tuning.jobs.list(limit=3)] == ids[::-1]
    after = api.fine_tuning.jobs.list(after=ids[1])
    assert [j.id for j in after.data] == [ids[0]] and not after.has_more

    cancelled = api.fine_tuning.jobs.cancel(ids[1])
    assert cancelled.status == "cancelled"
    assert api.fine_tuning.jobs.retrieve(ids[1]).status == "cancelled"
    with pytest.raises(openai.ConflictError, match="already cancelled"):
        api.fine_tuning.jobs.cancel(ids[1])
    levels = {e.level for e in api.fine_tuning.jobs.list_events(ids[1])}
    assert "warn" in levels  # the cancel request


def test_a_failed_job_shows_its_error(api: openai.OpenAI) -> None:
    job = api.fine_tuning.jobs.create(model="tiny", training_file=upload(api))
    claim = relay.claim(job.id, "preprocess")
    with session_scope() as session:
        runs.fail_phase(session, claim, code="invalid_dataset", message="row 3 is unreadable")
    failed = api.fine_tuning.jobs.retrieve(job.id)
    assert failed.status == "failed"
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == ("invalid_dataset", "row 3 is unreadable")
    errors = [e for e in api.fine_tuning.jobs.list_events(job.id) if e.level == "error"]
    assert errors and "row 3 is unreadable" in errors[-1].message


def test_legacy_hyperparameters_and_auto(client: TestClient, api: openai.OpenAI) -> None:
    job = api.fine_tuning.jobs.create(
        model="tiny",
        training_file=upload(api),
        hyperparameters={"n_epochs": 1, "batch_size": "auto", "learning_rate_multiplier": 0.5},
        extra_body={"pools": {"warmup": "a100"}, "max_cost": "50"},
    )
    own = client.get(f"/v1/jobs/{job.id}").json()
    assert [p["pool"] for p in own["phases"]] == ["t4", "a100", "a100"]
    assert float(own["max_cost"]["amount"]) == 50
    hp = own["hyperparameters"]
    assert (hp["total_epochs"], hp["warmup_epochs"], hp["batch_size"]) == (1, 1, 2)
    assert hp["learning_rate"] == pytest.approx(1e-4)
    assert job.hyperparameters.learning_rate_multiplier == pytest.approx(0.5)


def test_validation_file_is_held_out_whole_and_echoed(client: TestClient) -> None:
    api = openai_client(client)
    training, validation = upload(api), upload(api)
    job = api.fine_tuning.jobs.create(
        model="tiny", training_file=training, validation_file=validation
    )
    assert (job.training_file, job.validation_file) == (training, validation)
    extra: dict[str, Any] = job.model_extra or {}
    assert extra["relaytune"]["validation_dataset_id"] == validation
    assert api.fine_tuning.jobs.retrieve(job.id).validation_file == validation
    assert [j.validation_file for j in api.fine_tuning.jobs.list()] == [validation]
    with pytest.raises(openai.ConflictError, match=job.id):
        api.files.delete(validation)
    assert api.fine_tuning.jobs.create(model="tiny", training_file=training).validation_file is None


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"validation_file": "nope"}, "validation_file"),
        ({"method": {"type": "dpo", "dpo": {}}}, "method.type"),
        (
            {
                "hyperparameters": {"n_epochs": 2},
                "method": {"type": "supervised", "supervised": {"hyperparameters": {}}},
            },
            "hyperparameters",
        ),
        ({"hyperparameters": {"n_epochs": 0}}, "hyperparameters.n_epochs"),
        ({"training_file": "nope"}, "dataset_id"),
        ({"model": "/etc"}, "base_model"),
    ],
)
def test_refusals_name_the_field(
    client: TestClient, api: openai.OpenAI, request_fields: dict[str, Any], param: str
) -> None:
    fields: dict[str, Any] = {"model": "tiny", "training_file": upload(api), **request_fields}
    with pytest.raises(openai.APIStatusError) as excinfo:
        api.fine_tuning.jobs.create(**fields)
    assert excinfo.value.status_code in (404, 422)
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["param"] == param, excinfo.value.body
    assert client.get("/v1/jobs").json()["total"] == 0
