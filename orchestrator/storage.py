"""Object storage behind one interface: S3 (boto3's transfer manager) or a local directory.

Phases hand over only through this store, so pools can run on different machines.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from orchestrator.settings import Settings, get_settings


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_modified(self, prefix: str) -> dict[str, datetime]: ...
    def delete(self, key: str) -> None: ...


def publish_dir(store: ObjectStore, local_dir: Path, prefix: str) -> int:
    """Upload a checkpoint directory with its manifest.json last, so that a reader who finds
    the manifest finds every file it lists; returns the bytes written."""
    manifest = local_dir / "manifest.json"
    total = 0
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file() and p != manifest):
        store.put_file(f"{prefix.rstrip('/')}/{path.relative_to(local_dir).as_posix()}", path)
        total += path.stat().st_size
    if manifest.is_file():
        store.put_file(f"{prefix.rstrip('/')}/manifest.json", manifest)
        total += manifest.stat().st_size
    return total


def download_dir(store: ObjectStore, prefix: str, local_dir: Path) -> list[Path]:
    prefix = prefix.rstrip("/") + "/"
    paths = []
    for key in store.list(prefix):
        target = local_dir / key[len(prefix) :]
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(key, target)
        paths.append(target)
    if not paths:
        raise FileNotFoundError(f"no objects under {prefix}")
    return paths


def delete_prefix(store: ObjectStore, prefix: str) -> None:
    for key in store.list(prefix.rstrip("/") + "/"):
        store.delete(key)


class LocalStore:
    """A directory that behaves like a bucket; used by the standalone stack."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"object key escapes the store: {key}")
        return path

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_bytes(data)
        tmp.replace(path)  # atomic: a reader never sees half an object

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".partial")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def get_bytes(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self._path(key), path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        base = self.root.resolve()
        return sorted(
            key
            for p in base.rglob("*")
            if p.is_file()
            and not p.name.endswith(".partial")
            and (key := p.relative_to(base).as_posix()).startswith(prefix)
        )

    def list_modified(self, prefix: str) -> dict[str, datetime]:
        """Keys under the prefix with when each was last written."""
        return {key: datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
                for key in self.list(prefix)}

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3Store:
    def __init__(
        self, *, endpoint: str, bucket: str, access_key: str, secret_key: str, region: str
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"}, s3={"addressing_style": "path"}
            ),
        )
        self.transfer = TransferConfig(multipart_threshold=64 * 1024 * 1024)

    def ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except self.client.exceptions.ClientError:
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, key, Config=self.transfer)

    def get_bytes(self, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def get_file(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.client.download_file(self.bucket, key, str(path), Config=self.transfer)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, datetime]:
        """Keys under the prefix with when each was last written."""
        modified: dict[str, datetime] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            modified.update((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []))
        return modified

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


def make_store(settings: Settings) -> ObjectStore:
    if settings.s3_endpoint:
        store = S3Store(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
        )
        store.ensure_bucket()
        return store
    return LocalStore(settings.object_store_dir)


@lru_cache
def get_store() -> ObjectStore:
    return make_store(get_settings())
