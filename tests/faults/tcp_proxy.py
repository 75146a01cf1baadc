"""A threaded TCP proxy that a test can cut and restore, to stage a database or broker outage
for the processes that connect through it while the shared servers keep running.

`cut()` closes every connection it carries and refuses new ones (each is accepted and closed
at once, so a client sees the server go away rather than a hang); `restore()` lets them
through again. The listening port stays the same throughout, so clients reconnect to the
address they were given.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, *, host: str = "127.0.0.1"):
        self.target = (target_host, target_port)
        self._listener = socket.create_server((host, 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self.refused = 0  # connections turned away while cut
        self._thread = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)

    @classmethod
    def for_url(cls, url: str) -> TcpProxy:
        parts = urlsplit(url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"the URL names no host and port to proxy: {url}")
        return cls(parts.hostname, parts.port)

    def url_for(self, url: str) -> str:
        """The same URL (credentials, path, query) with this proxy as its host and port."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{self.host}:{self.port}" if userinfo else f"{self.host}:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def cut(self) -> int:
        """Close every carried connection and refuse new ones; returns how many were closed."""
        with self._lock:
            self._cut = True
            carried, self._open = self._open, set()
        for sock in carried:
            _close(sock)
        return len(carried) // 2  # each connection is a client socket and an upstream socket

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    @contextlib.contextmanager
    def outage(self) -> Iterator[int]:
        """Cut for the duration of the block; yields how many connections were closed."""
        try:
            yield self.cut()
        finally:
            self.restore()

    def close(self) -> None:
        self._closed = True
        _close(self._listener)
        self.cut()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            with self._lock:
                refuse = self._cut
                if refuse:
                    self.refused += 1
            if refuse:
                _close(client)
                continue
            threading.Thread(target=self._connect, args=(client,), daemon=True).start()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            _close(client)
            return
        with self._lock:
            if self._cut:  # cut while this connection was being made
                self.refused += 1
                _close(client)
                _close(upstream)
                return
            self._open.update((client, upstream))
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
        except OSError:
            pass  # cut, or the other end went away
        finally:
            with self._lock:
                self._open.discard(source)
                self._open.discard(sink)
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
