"""Readiness names the store that is down, and every route answers an unavailable store with a
503 in the error envelope. The stores are made unreachable by pointing relaytune at a closed
port of this machine; the shared services are never stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.exceptions import ConnectTimeoutError, EndpointConnectionError
from fastapi import FastAPI
from fastapi.testclient import TestClient
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError

from orchestrator import dispatch
from services.api.main import create_app
from tests.backing.processes import free_port
from tests.conftest import reset_caches
from tests.factories import new_api_key

Server = Callable[..., TestClient]


@pytest.fixture
def server(
    service_env: dict[str, str],
    recorded_dispatch: dispatch.RecordingDispatcher,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Server]:
    """Starts the API with some RELAYTUNE_* settings changed; server errors come back as
    responses, as a client sees them."""
    clients: list[TestClient] = []

    def start(**settings: str) -> TestClient:
        for name, value in settings.items():
            monkeypatch.setenv(f"RELAYTUNE_{name.upper()}", value)
        reset_caches()
        client = TestClient(create_app(), raise_server_exceptions=False)
        clients.append(client.__enter__())
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)
    monkeypatch.undo()
    reset_caches()


def closed_port() -> int:
    """A port of 127.0.0.1 that nothing listens on: connections to it are refused."""
    return free_port()


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    assert error["param"] is None and error["message"]
    return error


def test_ready_when_the_database_the_broker_and_the_object_store_answer(
    clean_db: None,
    server: Server,
) -> None:
    response = server().get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ready"}


def test_a_database_that_does_not_answer_makes_readyz_503_naming_it(server: Server) -> None:
    client = server(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/x")
    error = _error(client.get("/readyz"), 503)
    assert error["code"] == "not_ready"
    assert "database" in error["message"]
    assert "broker" not in error["message"] and "object store" not in error["message"]
    assert {c["check"]: c["status"] for c in error["details"]} == {
        "database": "down",
        "broker": "ok",
        "object_store": "ok",
    }


@pytest.mark.parametrize(
    ("scheme", "reason"),
    [
        ("redis", "ConnectionError"),  # asked with a PING
        ("amqp", "OperationalError"),  # any other broker: through a kombu connection
    ],
)
def test_a_broker_that_does_not_answer_makes_readyz_503_naming_it(
    clean_db: None,
    server: Server,
    scheme: str,
    reason: str,
) -> None:
    client = server(broker_url=f"{scheme}://127.0.0.1:{closed_port()}/0")
    error = _error(client.get("/readyz"), 503)
    assert error["code"] == "not_ready"
    assert "broker" in error["message"] and "database" not in error["message"]
    [broker] = [c for c in error["details"] if c["check"] == "broker"]
    assert broker == {"check": "broker", "status": "down", "reason": reason}


def test_an_object_store_that_does_not_answer_makes_readyz_503_naming_it(
    clean_db: None,
    server: Server,
) -> None:
    client = server(s3_endpoint=f"http://127.0.0.1:{closed_port()}")
    error = _error(client.get("/readyz"), 503)
    assert error["code"] == "not_ready"
    assert "object store" in error["message"] and "database" not in error["message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs"),
        ("GET", "/v1/pools"),
        ("POST", "/v1/jobs"),
        ("GET", "/metrics"),
    ],
)
def test_every_route_answers_503_unavailable_while_the_database_is_down(
    server: Server,
    method: str,
    path: str,
) -> None:
    client = server(database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/x")
    response = client.request(
        method,
        path,
        json={} if method == "POST" else None,
        headers={"Authorization": "Bearer rt_some_key"},
    )
    error = _error(response, 503)
    assert error["code"] == "unavailable"
    assert "store" in error["message"] or "database" in error["message"]


def _failing_route_app(exc: BaseException) -> TestClient:
    app: FastAPI = create_app()

    @app.get("/fails")
    def fails() -> None:
        raise exc

    return TestClient(app, raise_server_exceptions=False)


def _connection_lost() -> DBAPIError:
    error = DBAPIError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    error.connection_invalidated = True
    return error


@pytest.mark.parametrize(
    ("exc", "store"),
    [
        (OperationalError("SELECT 1", {}, Exception("connection refused")), "database"),
        (InterfaceError("SELECT 1", {}, Exception("connection already closed")), "database"),
        (_connection_lost(), "database"),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"), "broker"),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9000/relaytune"), "object store"),
        (ConnectTimeoutError(endpoint_url="http://127.0.0.1:9000/relaytune"), "object store"),
    ],
    ids=["operational", "interface", "invalidated", "redis", "s3-endpoint", "s3-timeout"],
)
def test_an_unavailable_store_is_a_503_naming_the_store(
    service_env: dict[str, str],
    exc: Exception,
    store: str,
) -> None:
    error = _error(_failing_route_app(exc).get("/fails"), 503)
    assert error["code"] == "unavailable"
    assert store in error["message"]


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("secret internals /srv/relaytune/worker.py line 12"),
        IntegrityError("INSERT secret internals", {}, Exception("duplicate key")),
    ],
    ids=["runtime", "integrity"],
)
def test_an_unexpected_error_is_a_500_in_the_envelope_without_its_details(
    service_env: dict[str, str],
    exc: Exception,
) -> None:
    response = _failing_route_app(exc).get("/fails")
    error = _error(response, 500)
    assert error["code"] == "internal_error"
    assert "secret" not in response.text and "Traceback" not in response.text


def test_routes_answer_as_usual_again_once_every_store_answers(
    clean_db: None,
    server: Server,
) -> None:
    client = server()  # after the tests above pointed the API at closed ports
    client.headers["Authorization"] = f"Bearer {new_api_key()}"
    assert client.get("/v1/jobs").status_code == 200
