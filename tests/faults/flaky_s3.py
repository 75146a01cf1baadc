"""An S3 endpoint that fails on purpose: an HTTP proxy in front of a real one (moto, MinIO).

Requests pass through unchanged unless a fault matches them:

    with FlakyS3(upstream) as s3:
        s3.fail(puts_under("jobs/"), status=503, times=2)   # the next two PUTs get a 503
        s3.drop(lambda r: r.method == "DELETE")            # every DELETE loses its connection
        hold = s3.hold(puts_under("jobs/j/warmup/a1/step-3/training_state.pt"))
        hold.arrived.wait()                                # a client is mid-upload now

Every request is logged once it has been answered (or dropped), so a test can wait for one
and count what was retried. The proxy listens on 127.0.0.1 only and forwards to one upstream.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

# Not forwarded: they describe one hop, and the proxy frames each hop itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "content-length",
    }
)
# Written by the proxy's own server for every answer.
OWN_HEADERS = frozenset({"server", "date"})
# A held request gives up by itself after this long, so a test that forgets it cannot hang.
HOLD_LIMIT_S = 120.0


@dataclass(frozen=True)
class Request:
    method: str
    bucket: str
    key: str  # "" for a request on the bucket itself (list, head bucket)
    query: dict[str, list[str]]

    @property
    def is_part(self) -> bool:
        """One part of a multipart upload."""
        return self.method == "PUT" and "partNumber" in self.query


@dataclass(frozen=True)
class Seen:
    request: Request
    outcome: str  # "200", "503", ... (what the client got) or "dropped"


Match = Callable[[Request], bool]


def puts_under(prefix: str) -> Match:
    """Uploads (whole objects and parts) of keys starting with the prefix."""
    return lambda r: r.method == "PUT" and r.key.startswith(prefix)


@dataclass
class Hold:
    """A request kept waiting: `arrived` is set when one comes; it fails once released."""

    arrived: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None

    def release(self) -> None:
        self.released.set()


@dataclass
class Fault:
    match: Match
    action: Literal["status", "drop", "hold"]
    status: int = 503
    times: int | None = None  # None: every matching request
    hits: int = 0
    hold: Hold | None = None

    def take(self, request: Request) -> bool:
        if (self.times is not None and self.hits >= self.times) or not self.match(request):
            return False
        self.hits += 1
        return True


class FlakyS3:
    def __init__(self, upstream: str):
        parts = urlsplit(upstream)
        self.upstream_host = parts.hostname or "127.0.0.1"
        self.upstream_port = parts.port or 80
        self.faults: list[Fault] = []
        self.log: list[Seen] = []
        self._lock = threading.Condition()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="flaky-s3"
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FlakyS3:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.reset()
        self._server.shutdown()
        self._server.server_close()

    # --- what the tests ask for -----------------------------------------------------------

    def fail(self, match: Match, *, status: int = 503, times: int | None = None) -> Fault:
        return self._add(Fault(match, "status", status=status, times=times))

    def drop(self, match: Match, *, times: int | None = None) -> Fault:
        """Close the connection without answering, after reading the request."""
        return self._add(Fault(match, "drop", times=times))

    def hold(self, match: Match) -> Hold:
        """Keep the first matching request waiting until released; then answer 503."""
        hold = Hold()
        self._add(Fault(match, "hold", times=1, hold=hold))
        return hold

    def reset(self) -> None:
        """Forget every fault and the log; release held requests."""
        with self._lock:
            for fault in self.faults:
                if fault.hold is not None:
                    fault.hold.release()
            self.faults.clear()
            self.log.clear()

    def seen(self, match: Match = lambda _: True) -> list[Seen]:
        with self._lock:
            return [s for s in self.log if match(s.request)]

    def wait_for(self, match: Match, *, timeout: float) -> Seen:
        """The first logged request that matches, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = next((s for s in self.log if match(s.request)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching request through the proxy in {timeout}s")
                self._lock.wait(left)

    # --- used by the handler --------------------------------------------------------------

    def _add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def _fault_for(self, request: Request) -> Fault | None:
        with self._lock:
            return next((f for f in self.faults if f.take(request)), None)

    def _record(self, request: Request, outcome: str) -> None:
        with self._lock:
            self.log.append(Seen(request, outcome))
            self._lock.notify_all()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (a killed worker, a cancelled part) is no proxy fault


def _parse(method: str, target: str) -> Request:
    parts = urlsplit(target)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    return Request(method, unquote(bucket), unquote(key), parse_qs(parts.query))


def _handler_for(proxy: FlakyS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients expect

        def log_message(self, format: str, *args: object) -> None:
            pass  # the proxy's log is `proxy.log`

        def _body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _handle(self) -> None:
            request = _parse(self.command, self.path)
            body = self._body()
            fault = proxy._fault_for(request)
            if fault is not None and fault.hold is not None:
                fault.hold.request = request
                fault.hold.arrived.set()
                fault.hold.released.wait(HOLD_LIMIT_S)
            if fault is not None and fault.action == "drop":
                self.close_connection = True
                proxy._record(request, "dropped")
                return
            if fault is not None:
                self._answer(fault.status, [("Content-Type", "text/plain")], b"injected fault\n")
                proxy._record(request, str(fault.status))
                return
            status, headers, payload = self._forward(body)
            self._answer(status, headers, payload)
            proxy._record(request, str(status))

        def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            conn = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
            try:
                # The client signed its request for the Host it sent: keep it.
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_BY_HOP:
                        conn.putheader(name, value)
                if body or self.command in ("PUT", "POST"):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                response = conn.getresponse()
                payload = response.read()
                headers = [
                    (k, v)
                    for k, v in response.getheaders()
                    if k.lower() not in HOP_BY_HOP | OWN_HEADERS
                    or (k.lower() == "content-length" and self.command == "HEAD")
                ]
                return response.status, headers, payload
            except OSError as exc:
                return 502, [("Content-Type", "text/plain")], f"upstream: {exc}\n".encode()
            finally:
                conn.close()

        def _answer(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            if self.command != "HEAD":
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
