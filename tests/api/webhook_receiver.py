"""A webhook receiver for tests: a real HTTP server on a free port that checks each delivery's
signature the way the README tells receivers to."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


def _readme_verifier() -> Callable[[str, str, bytes], bool]:
    """The verifier the README gives receivers, run as written, so the documented code is the
    code these tests check deliveries with."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("### Webhooks") :]
    start = section.index("```python\n") + len("```python\n")
    namespace: dict[str, Any] = {}
    exec(section[start : section.index("```", start)], namespace)
    verifier: Callable[[str, str, bytes], bool] = namespace["verify"]
    return verifier


verify = _readme_verifier()


@dataclass(frozen=True)
class Call:
    event: dict[str, Any]
    event_id_header: str
    host_header: str
    verified: bool


class Receiver:
    """Answers each POST with the next of `answers` (then 200) and records it; over TLS when
    given a server context."""

    def __init__(self, answers: list[int], tls: ssl.SSLContext | None = None):
        self.secret = ""
        self.answers = list(answers)
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.scheme = "http"
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return self.url_at("127.0.0.1")

    def url_at(self, host: str) -> str:
        return f"{self.scheme}://{host}:{self.port}/hook"

    def wait_for(self, count: int, timeout: float = 30) -> list[Call]:
        deadline = time.monotonic() + timeout
        while len(self.calls) < count:
            assert time.monotonic() < deadline, f"{len(self.calls)} of {count} calls came"
            time.sleep(0.05)
        return list(self.calls)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.calls.append(
                        Call(
                            event=json.loads(body),
                            event_id_header=self.headers["Relaytune-Event-Id"],
                            host_header=self.headers["Host"],
                            verified=verify(
                                receiver.secret, self.headers["Relaytune-Signature"], body
                            ),
                        )
                    )
                    code = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        return Handler


@contextmanager
def receiver(*answers: int, tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    running = Receiver(list(answers), tls)
    thread = threading.Thread(target=running.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield running
    finally:
        running.server.shutdown()
        running.server.server_close()
