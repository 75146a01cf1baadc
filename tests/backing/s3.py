"""S3 for the tests: moto's S3-compatible server (an S3 endpoint is never looked for locally)."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import httpx

from .processes import (
    LOCALHOST,
    ManagedProcess,
    ServiceError,
    free_port,
    make_workdir,
    wait_until_ready,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ENV_S3_ENDPOINT = "RELAYTUNE_TEST_S3_ENDPOINT"
ENV_S3_ACCESS_KEY = "RELAYTUNE_TEST_S3_ACCESS_KEY"
ENV_S3_SECRET_KEY = "RELAYTUNE_TEST_S3_SECRET_KEY"
ENV_S3_REGION = "RELAYTUNE_TEST_S3_REGION"
# moto accepts any credentials; an endpoint given in ENV_S3_ENDPOINT may need its own.
DEFAULT_S3_SETTINGS = {
    ENV_S3_ACCESS_KEY: "testing",
    ENV_S3_SECRET_KEY: "testing",
    ENV_S3_REGION: "us-east-1",
}


def s3_client(endpoint: str | None = None) -> S3Client:
    """A boto3 S3 client for the test endpoint, with path-style addressing."""
    import boto3
    from botocore.config import Config

    def setting(name: str) -> str:
        return os.environ.get(name) or DEFAULT_S3_SETTINGS[name]

    return boto3.client(
        "s3",
        endpoint_url=endpoint or os.environ[ENV_S3_ENDPOINT],
        aws_access_key_id=setting(ENV_S3_ACCESS_KEY),
        aws_secret_access_key=setting(ENV_S3_SECRET_KEY),
        region_name=setting(ENV_S3_REGION),
        config=Config(s3={"addressing_style": "path"}),
    )


def _http_answers(url: str) -> None:
    response = httpx.get(url, timeout=2, trust_env=False)
    if response.status_code >= 500:
        raise ServiceError(f"{url} answered {response.status_code}")


def start_moto() -> tuple[str, ManagedProcess]:
    """Start moto's S3-compatible HTTP server on a free port of 127.0.0.1."""
    workdir = make_workdir("relaytune-s3-")
    port = free_port()
    server = ManagedProcess(
        "moto", [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)], workdir
    )
    endpoint = f"http://{LOCALHOST}:{port}"
    try:
        wait_until_ready(lambda: _http_answers(endpoint), "moto server", server)
    except BaseException:
        server.stop()
        raise
    return endpoint, server
