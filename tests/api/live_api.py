"""The API served by uvicorn on a real socket, in a thread of the test process: for what the
in-process TestClient cannot do, such as reading a response while it is still being written."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from services.api.main import create_app


@contextmanager
def live_api(app: FastAPI | None = None) -> Iterator[str]:
    """The base URL of a running API (its lifespan included) on a free port: `app`, or a new
    one. In this process, so a test's dispatcher records what it sends."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # A stream still open at the end is cut after a moment rather than awaited.
    config = uvicorn.Config(
        app or create_app(), log_level="warning", timeout_graceful_shutdown=2, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
