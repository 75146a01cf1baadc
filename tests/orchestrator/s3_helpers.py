"""An S3Store on the tests' S3 endpoint, in a bucket of the caller's naming."""

from __future__ import annotations

from orchestrator.storage import S3Store


def s3_store(endpoint: str, bucket: str, **options: int) -> S3Store:
    store = S3Store(
        endpoint=endpoint,
        bucket=bucket,
        access_key="testing",
        secret_key="testing",
        region="us-east-1",
        **options,
    )
    store.ensure_bucket()
    return store
