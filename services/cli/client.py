"""A small HTTP client of API v1 for the CLI."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

# How long a live event stream may stay silent (the server pings more often) before the CLI
# reconnects from the last event it saw.
STREAM_SILENCE_SECONDS = 60.0


class ApiError(Exception):
    def __init__(self, status: int, error: dict[str, Any]):
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.error = error

    def lines(self) -> list[str]:
        """The error, then each problem the API listed (every bad row of a data set)."""
        lines = [str(self)]
        for detail in self.error.get("details") or []:
            where = detail.get("param") or ""
            if detail.get("line") is not None:
                where = f"{where} line {detail['line']}".strip()
            lines.append(f"  - {where}: {detail.get('message')} ({detail.get('code')})")
        return lines


class Unreachable(Exception):
    """Nothing answers at the API's URL (connection refused, unknown host, connect timeout)."""

    def __init__(self, url: str):
        super().__init__(url)
        self.url = url


class Disconnected(Exception):
    """The API was reached but the exchange broke off (a reset, a read timeout)."""

    def __init__(self, url: str, reason: str):
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class StreamUnavailable(Exception):
    """The API has no live event stream for this job (an older server): poll instead."""


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, str, str]]:
    """(id, event, data) for each Server-Sent Event; comments (keepalive pings) are skipped."""
    event_id, event, data = "", "message", list[str]()
    for line in lines:
        if not line:
            if data:
                yield event_id, event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0):
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}
        )

    @property
    def url(self) -> str:
        return str(self.http.base_url).rstrip("/")

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.url) from exc
        except httpx.TransportError as exc:
            raise Disconnected(self.url, str(exc) or type(exc).__name__) from exc
        return self._check(response)

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError):
                error = {"code": f"http_{response.status_code}", "message": response.text}
            raise ApiError(response.status_code, error)
        return response

    def upload_dataset(self, path: Path) -> dict[str, Any]:
        """A folder (zipped here), a zip, or an OpenAI chat .jsonl (sent to /v1/files)."""
        if path.is_dir():
            upload: Any = (f"{path.name}.zip", zip_folder(path), "application/zip")
            return dict(self._request("POST", "/v1/datasets", files={"file": upload}).json())
        with path.open("rb") as handle:
            if path.suffix.lower() == ".jsonl":
                upload = (path.name, handle, "application/jsonl")
                answer = self._request(
                    "POST", "/v1/files", files={"file": upload}, data={"purpose": "fine-tune"}
                )
                return dict(answer.json())
            upload = (path.name, handle, "application/zip")
            return dict(self._request("POST", "/v1/datasets", files={"file": upload}).json())

    def datasets(self, limit: int, offset: int) -> dict[str, Any]:
        params = {"limit": limit, "offset": offset}
        return dict(self._request("GET", "/v1/datasets", params=params).json())

    def delete_dataset(self, dataset_id: str) -> None:
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/jobs", json=body).json())

    def estimate(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/estimates", json=body).json())

    def jobs(self, status: str | None, limit: int, offset: int) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        return dict(self._request("GET", "/v1/jobs", params=params).json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/jobs/{job_id}").json())

    def cancel(self, job_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/v1/jobs/{job_id}/cancel").json())

    def requeue(self, job_id: str, phase: str, start_from: str | None) -> dict[str, Any]:
        params = {"from": start_from} if start_from else {}
        path = f"/v1/jobs/{job_id}/phases/{phase}/requeue"
        return dict(self._request("POST", path, params=params).json())

    def events(self, job_id: str, after: int = 0, limit: int = 200) -> list[dict[str, Any]]:
        params = {"after": after, "limit": limit}
        return list(self._request("GET", f"/v1/jobs/{job_id}/events", params=params).json())

    def open_event_stream(self, job_id: str, after: int = 0) -> httpx.Response:
        """The job's live event stream, starting after event `after`. Raises
        StreamUnavailable when the API answers with anything but an event stream."""
        headers = {"Accept": "text/event-stream"}
        if after:
            headers["Last-Event-ID"] = str(after)
        request = self.http.build_request(
            "GET",
            f"/v1/jobs/{job_id}/events",
            params={"stream": "true", "after": after},
            headers=headers,
            timeout=httpx.Timeout(STREAM_SILENCE_SECONDS, connect=10.0),
        )
        try:
            response = self.http.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.url) from exc
        except httpx.TransportError as exc:
            raise Disconnected(self.url, str(exc) or type(exc).__name__) from exc
        content_type = response.headers.get("content-type", "")
        if response.status_code != 200 or not content_type.startswith("text/event-stream"):
            response.close()
            raise StreamUnavailable(f"{response.status_code} {content_type}")
        return response

    def read_event_stream(self, response: httpx.Response) -> Iterator[dict[str, Any]]:
        """The events of an open stream as they come; ends when the server ends the stream
        (after the job has ended)."""
        try:
            for _, _, data in parse_sse(response.iter_lines()):
                try:
                    event = json.loads(data)
                except ValueError:
                    continue  # not one of the job's events (an end marker, say)
                if isinstance(event, dict) and "id" in event and "type" in event:
                    yield event
        except httpx.TransportError as exc:
            raise Disconnected(self.url, str(exc) or type(exc).__name__) from exc
        finally:
            response.close()

    def download_adapter(self, job_id: str, target: Path, kind: str | None = None) -> int:
        """Write the adapter zip (kind "merged": the merged model, many GB) to `target` as it
        arrives, through a partial file, so that a broken download leaves no zip behind."""
        params = {"kind": kind} if kind else {}
        partial = target.with_name(target.name + ".partial")
        try:
            with self.http.stream("GET", f"/v1/jobs/{job_id}/adapter", params=params) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes(1 << 20):
                        handle.write(chunk)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unreachable(self.url) from exc
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise Disconnected(self.url, str(exc) or type(exc).__name__) from exc
        size = partial.stat().st_size
        partial.replace(target)
        return size

    def pools(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/pools").json())
