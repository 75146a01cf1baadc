"""Contract fuzzing: every operation of /openapi.json, driven by schemathesis in process.

Each operation gets generated requests, valid and invalid, twice over: with a valid (admin) API
key as the bearer, and with no key at all. Whatever is sent, the answer is never a 5xx, its
status code is one the schema documents, and its body matches the documented schema (the error
envelope included). Half the generated requests address the test's real job, data set, phase
and tenant instead of random ids, so the routes are exercised past their 404s.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.python.asgi import shutdown_lifespans

from orchestrator import dispatch
from orchestrator.plan import PHASES
from services.api.main import create_app
from tests.factories import dataset_zip, new_api_key

# Bounded so that both passes over every operation take a minute or two on two cores.
CONFIG = schemathesis.Config.from_dict({
    "seed": 20261128,
    "generation": {"max-examples": 25, "database": "none"},
    "phases": {"coverage": {"enabled": False}},
})

schema = schemathesis.openapi.from_dict(create_app().openapi(), config=CONFIG)

CONTRACT_CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


class World:
    """Real rows the fuzzer may address instead of random ids."""

    def __init__(self, app: FastAPI, key: str, job_id: str, dataset_id: str) -> None:
        self.app, self.key, self.job_id, self.dataset_id = app, key, job_id, dataset_id


@pytest.fixture
def world(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> Iterator[World]:
    app = create_app()
    key = new_api_key("acme", admin=True)
    with TestClient(app, headers={"Authorization": f"Bearer {key}"}) as client:
        upload = client.post("/v1/datasets", files={"file": ("d.zip", dataset_zip())})
        assert upload.status_code == 201, upload.text
        dataset_id = upload.json()["id"]
        job = client.post("/v1/jobs", json={"dataset_id": dataset_id})
        assert job.status_code == 201, job.text
    yield World(app, key, job.json()["id"], dataset_id)
    shutdown_lifespans()  # the ASGI transport keeps the app's lifespan running until told


def _address_real_rows(case: schemathesis.Case, world: World, phase: str) -> None:
    params = case.path_parameters or {}
    if "job_id" in params:
        params["job_id"] = world.job_id
    if "phase" in params:
        params["phase"] = phase
    if "name" in params and case.path.startswith("/v1/tenants"):
        params["name"] = "acme"
    # Only a string is swapped: an invalid dataset_id (a number, null) stays invalid.
    if isinstance(case.body, dict) and isinstance(case.body.get("dataset_id"), str):
        case.body["dataset_id"] = world.dataset_id


FUZZ_SETTINGS = settings(deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@schema.given(real=st.booleans(), phase=st.sampled_from(PHASES))
@FUZZ_SETTINGS
def test_contract_with_key(case: schemathesis.Case, real: bool, phase: str, world: World) -> None:
    if real:
        _address_real_rows(case, world, phase)
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {world.key}"}
    case.call_and_validate(app=world.app, checks=CONTRACT_CHECKS)


@schema.parametrize()
@schema.given(real=st.booleans(), phase=st.sampled_from(PHASES))
@FUZZ_SETTINGS
def test_contract_without_key(case: schemathesis.Case, real: bool, phase: str,
                              world: World) -> None:
    if real:
        _address_real_rows(case, world, phase)
    headers: dict[str, Any] = dict(case.headers or {})
    headers.pop("Authorization", None)
    case.headers = headers
    response = case.call_and_validate(app=world.app, checks=CONTRACT_CHECKS)
    if case.operation.definition.raw.get("security"):
        assert response.status_code == 401, response.text
