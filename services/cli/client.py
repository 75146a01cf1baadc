"""A small HTTP client of API v1 for the CLI."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, error: dict[str, Any]):
        super().__init__(f"{status} {error.get('code')}: {error.get('message')}")
        self.status = status
        self.error = error


def zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, path.relative_to(folder).as_posix())
    return buffer.getvalue()


class Client:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0):
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, headers={"Authorization": f"Bearer {api_key}"}
        )

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError):
                error = {"code": f"http_{response.status_code}", "message": response.text}
            raise ApiError(response.status_code, error)
        return response

    def upload_dataset(self, folder: Path) -> dict[str, Any]:
        files = {"file": (f"{folder.name}.zip", zip_folder(folder), "application/zip")}
        return dict(self._check(self.http.post("/v1/datasets", files=files)).json())

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._check(self.http.post("/v1/jobs", json=body)).json())

    def estimate(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._check(self.http.post("/v1/estimates", json=body)).json())

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self._check(self.http.get(f"/v1/jobs/{job_id}")).json())

    def adapter(self, job_id: str) -> bytes:
        return self._check(self.http.get(f"/v1/jobs/{job_id}/adapter")).content

    def pools(self) -> list[dict[str, Any]]:
        return list(self._check(self.http.get("/v1/pools")).json())
