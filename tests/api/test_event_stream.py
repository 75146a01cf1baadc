"""GET /v1/jobs/{id}/events?stream=true: a job's timeline as Server-Sent Events, read from a
running API while the job moves."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, update

from orchestrator import dispatch
from orchestrator.auth import issue_api_key
from orchestrator.db import get_sessionmaker, session_scope
from orchestrator.events import EventType, emit
from orchestrator.models import ApiKey, utcnow
from services.api import event_stream
from tests.api.live_api import live_api
from tests.factories import new_api_key
from tests.orchestrator.relay_helpers import cancel, claim, complete, new_tenant, submit


@pytest.fixture
def api(clean_db: None, recorded_dispatch: dispatch.RecordingDispatcher) -> Iterator[str]:
    with live_api() as url:
        yield url


@pytest.fixture
def tenant(clean_db: None) -> str:
    return new_tenant("acme")


@pytest.fixture
def acme(api: str, tenant: str) -> Iterator[httpx.Client]:
    """A client of the tenant."""
    headers = {"Authorization": f"Bearer {new_api_key('acme')}"}
    # The read timeout bounds a wait for a message that never comes, so a failure is reported.
    with httpx.Client(base_url=api, headers=headers, timeout=20) as client:
        yield client


class Messages:
    """The stream's SSE messages (field -> value), comments (keepalive pings) left out."""

    def __init__(self, response: httpx.Response):
        self.lines = response.iter_lines()

    def __iter__(self) -> Iterator[dict[str, str]]:
        return self

    def __next__(self) -> dict[str, str]:
        fields: dict[str, str] = {}
        for line in self.lines:
            if not line:
                if fields:
                    return fields
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")
        if fields:
            return fields
        raise StopIteration

    def until(self, event: str) -> list[dict[str, str]]:
        """Messages up to and including the first of type `event`."""
        seen = []
        for message in self:
            seen.append(message)
            if message.get("event") == event:
                return seen
        raise AssertionError(f"the stream ended before a {event!r} message: {seen}")


def listed(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/v1/jobs/{job_id}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, Any]] = response.json()
    return events


def test_the_stream_sends_the_backlog_then_new_events_and_ends_when_the_job_is_done(
    acme: httpx.Client, tenant: str
) -> None:
    job_id = submit(tenant)
    with acme.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = Messages(response)
        backlog = messages.until("phase_queued")
        assert [m["event"] for m in backlog] == ["job_submitted", "phase_queued"]

        complete(claim(job_id, "preprocess"))  # written while the stream is open
        live = messages.until("phase_succeeded")
        assert [m["event"] for m in live] == ["phase_started", "phase_succeeded"]
        complete(claim(job_id, "warmup"))
        complete(claim(job_id, "final"))
        rest = list(messages)  # the stream closes by itself once the job is done

    sent = [*backlog, *live, *rest]
    assert rest[-1] == {"event": "end", "data": json.dumps({"status": "succeeded"})}
    assert rest[-2]["event"] == "job_succeeded"
    # Every event once, in order, each exactly as the list route shows it.
    events = [m for m in sent if m["event"] != "end"]
    assert [json.loads(m["data"]) for m in events[:2]] == listed(acme, job_id)[:2]
    assert [int(m["id"]) for m in events] == [e["id"] for e in listed(acme, job_id)]
    assert all(json.loads(m["data"])["type"] == m["event"] for m in events)


def test_a_stream_resumes_after_last_event_id_or_after(acme: httpx.Client, tenant: str) -> None:
    job_id = submit(tenant)
    complete(claim(job_id, "preprocess"))
    cancel(job_id)
    ids = [e["id"] for e in listed(acme, job_id)]
    url = f"/v1/jobs/{job_id}/events"

    def streamed_ids(**request: Any) -> list[int]:
        with acme.stream("GET", url, **request) as response:
            assert response.status_code == 200
            messages = list(Messages(response))
        assert messages[-1]["event"] == "end"
        return [int(m["id"]) for m in messages[:-1]]

    assert streamed_ids(params={"stream": "true"}) == ids
    resumed = streamed_ids(params={"stream": "true"}, headers={"Last-Event-ID": str(ids[2])})
    assert resumed == ids[3:]
    assert streamed_ids(params={"stream": "true", "after": ids[4]}) == ids[5:]
    # A reconnecting client's header is its latest position: it wins over the first `after`.
    both = {
        "params": {"stream": "true", "after": ids[0]},
        "headers": {"Last-Event-ID": str(ids[-1])},
    }
    assert streamed_ids(**both) == []


def test_an_event_committed_after_a_later_one_still_reaches_the_stream(
    acme: httpx.Client, tenant: str
) -> None:
    job_id = submit(tenant)
    with acme.stream("GET", f"/v1/jobs/{job_id}/events", params={"stream": "true"}) as response:
        messages = Messages(response)
        messages.until("phase_queued")
        slow = get_sessionmaker()()  # takes its event id first, commits last
        try:
            emit(slow, job_id, EventType.METRICS, step=1)
            slow.flush()
            with session_scope() as fast:
                emit(fast, job_id, EventType.METRICS, step=2)
            assert json.loads(messages.until("metrics")[-1]["data"])["data"] == {"step": 2}
            slow.commit()
        finally:
            slow.close()
        cancel(job_id)  # so that the stream ends
        rest = list(messages)
    metrics = [json.loads(m["data"]) for m in rest if m["event"] == "metrics"]
    assert [m["data"] for m in metrics] == [{"step": 1}]
    assert metrics[0]["id"] < max(e["id"] for e in listed(acme, job_id))


def test_another_tenants_job_is_not_found_and_keys_go_in_the_header_only(
    acme: httpx.Client, tenant: str, api: str
) -> None:
    job_id = submit(tenant)
    url = f"/v1/jobs/{job_id}/events"
    other = {"Authorization": f"Bearer {new_api_key('beta')}"}
    response = httpx.get(f"{api}{url}", params={"stream": "true"}, headers=other)
    assert response.status_code == 404
    assert response.json()["error"]["param"] == "job_id"

    key = acme.headers["Authorization"].removeprefix("Bearer ")
    response = httpx.get(f"{api}{url}", params={"stream": "true", "api_key": key})
    assert response.status_code == 401


def test_a_last_event_id_that_is_not_an_event_id_is_refused(
    acme: httpx.Client, tenant: str
) -> None:
    job_id = submit(tenant)
    response = acme.get(
        f"/v1/jobs/{job_id}/events",
        params={"stream": "true"},
        headers={"Last-Event-ID": "yesterday"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["param"] == "Last-Event-ID"


def _key_of(tenant_name: str) -> tuple[str, str]:
    """A new key of the tenant: its id and the key in clear."""
    with session_scope() as session:
        api_key, key = issue_api_key(session, tenant_name)
        return api_key.id, key


def _revoke_through_the_api(acme: httpx.Client, key_id: str) -> None:
    response = acme.delete(f"/v1/api-keys/{key_id}")  # another key of the same tenant
    assert response.status_code == 200, response.text


def _expire(_: httpx.Client, key_id: str) -> None:
    with session_scope() as session:
        session.execute(update(ApiKey).where(ApiKey.id == key_id).values(expires_at=utcnow()))


def _delete(_: httpx.Client, key_id: str) -> None:
    with session_scope() as session:
        session.execute(delete(ApiKey).where(ApiKey.id == key_id))


@pytest.mark.parametrize(
    ("spoil", "code"),
    [
        (_revoke_through_the_api, "api_key_revoked"),
        (_expire, "api_key_expired"),
        (_delete, "unauthorized"),
    ],
    ids=["revoked", "expired", "deleted"],
)
def test_a_stream_ends_with_an_error_once_its_key_is_no_longer_good(
    acme: httpx.Client,
    tenant: str,
    api: str,
    monkeypatch: pytest.MonkeyPatch,
    spoil: Callable[[httpx.Client, str], None],
    code: str,
) -> None:
    monkeypatch.setattr(event_stream, "KEY_CHECK_SECONDS", 0.1)
    job_id = submit(tenant)
    key_id, key = _key_of("acme")
    own_key = {"Authorization": f"Bearer {key}"}
    url = f"/v1/jobs/{job_id}/events"
    # Shorter than the keepalive interval: a stream that went on after the key went bad would
    # send nothing more (the job stays queued) and fail the read rather than hang the test.
    with (
        httpx.Client(base_url=api, headers=own_key, timeout=10) as own,
        own.stream("GET", url, params={"stream": "true"}) as spoiled,
        acme.stream("GET", url, params={"stream": "true"}) as kept,
    ):
        assert spoiled.status_code == kept.status_code == 200
        doomed, unaffected = Messages(spoiled), Messages(kept)
        doomed.until("phase_queued")
        unaffected.until("phase_queued")

        spoil(acme, key_id)
        last = list(doomed)[-1]  # the stream closes by itself
        assert last["event"] == "error" and "id" not in last
        error = json.loads(last["data"])["error"]
        assert (error["code"], error["param"]) == (code, "Authorization")
        if code != "unauthorized":
            assert error["message"].startswith(f"API key {key[:10]}… ")

        # The tenant's other key reads on, to the job's end.
        for phase in ("preprocess", "warmup", "final"):
            complete(claim(job_id, phase))
        rest = list(unaffected)
    assert rest[-1] == {"event": "end", "data": json.dumps({"status": "succeeded"})}
    assert [m["event"] for m in rest].count("phase_succeeded") == 3
    # A new request with the spoiled key is told the same.
    again = httpx.get(f"{api}{url}", params={"stream": "true"}, headers=own_key)
    assert (again.status_code, again.json()["error"]["code"]) == (401, code)
