"""Object storage behind one interface: S3 (boto3's transfer manager) or a local directory.

Phases hand over only through this store, so pools can run on different machines. Reading a
key that is not there raises FileNotFoundError in both; S3 requests are retried with backoff,
and one that fails every attempt raises ObjectStoreUnavailable naming the key (the log names
the bucket and endpoint). A download that goes out as it is read opens the object with
`open_read` instead of copying it to a local file first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from orchestrator.errors import RelaytuneError
from orchestrator.layout import MANIFEST_FILE, key_in, listing_prefix, manifest_key
from orchestrator.settings import Settings, get_settings

logger = logging.getLogger(__name__)


class ObjectStoreUnavailable(RelaytuneError):
    """The object store failed a request (after its retries); the message names the store."""

    status_code = 503
    code = "object_store_unavailable"


class ObjectReader:
    """A stored object opened for reading, as a file opened "rb" is: `size` is known before the
    first byte, `read(n)` gives up to n bytes (b"" at the end), and closing it, or leaving its
    `with` block, lets go of the file or the connection."""

    def __init__(self, size: int, read: Callable[[int], bytes], close: Callable[[], None]):
        self.size = size
        self._read = read
        self._close = close

    def read(self, size: int) -> bytes:
        return self._read(size)

    def close(self) -> None:
        self._close()

    def __enter__(self) -> ObjectReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ObjectStore(Protocol):
    def put_bytes(self, key: str, data: bytes) -> None: ...
    def put_file(self, key: str, path: Path) -> None: ...
    def get_bytes(self, key: str) -> bytes: ...
    def get_file(self, key: str, path: Path) -> None: ...
    def open_read(self, key: str) -> ObjectReader: ...
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...
    def list_modified(self, prefix: str) -> dict[str, datetime]: ...
    def delete(self, key: str) -> None: ...


# Files of a directory in flight at once: a small file costs a request's round trip, not
# bandwidth, so a checkpoint or data set of many small files moves several at a time (boto3
# clients are thread-safe; their connection pool holds 10).
TRANSFER_THREADS = 8


def _each(work: Callable[[Any], None], items: list[Any]) -> None:
    """`work` over `items`, TRANSFER_THREADS at a time; the first failure is raised once all
    have ended, so nothing is left running behind the caller."""
    if len(items) <= 1:
        for item in items:
            work(item)
        return
    with ThreadPoolExecutor(min(TRANSFER_THREADS, len(items))) as pool:
        for future in [pool.submit(work, item) for item in items]:
            future.result()


def publish_dir(store: ObjectStore, local_dir: Path, prefix: str) -> int:
    """Upload a checkpoint directory with its manifest.json last, once every other file is
    stored, so that a reader who finds the manifest finds every file it lists; returns the
    bytes written."""
    manifest = local_dir / MANIFEST_FILE
    files = sorted(p for p in local_dir.rglob("*") if p.is_file() and p != manifest)
    _each(
        lambda path: store.put_file(key_in(prefix, path.relative_to(local_dir).as_posix()), path),
        files,
    )
    total = sum(path.stat().st_size for path in files)
    if manifest.is_file():
        store.put_file(manifest_key(prefix), manifest)
        total += manifest.stat().st_size
    return total


def download_dir(store: ObjectStore, prefix: str, local_dir: Path) -> list[Path]:
    prefix = listing_prefix(prefix)
    pairs = [(key, local_dir / key[len(prefix) :]) for key in store.list(prefix)]
    if not pairs:
        raise FileNotFoundError(f"no objects under {prefix}")
    for _, target in pairs:
        target.parent.mkdir(parents=True, exist_ok=True)
    _each(lambda pair: store.get_file(*pair), pairs)
    return [target for _, target in pairs]


def delete_prefix(store: ObjectStore, prefix: str) -> None:
    """Delete objects that no row points to any more. Best effort: what a failing store keeps
    is an orphan, which the sweep deletes later; the caller's work has already succeeded."""
    try:
        for key in store.list(listing_prefix(prefix)):
            store.delete(key)
    except ObjectStoreUnavailable as exc:
        logger.warning("left %s to the sweep: %s", prefix, exc.message)


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

    def open_read(self, key: str) -> ObjectReader:
        """The object's file, opened; a write meanwhile replaces the file, not the bytes this
        reader sees."""
        source = self._path(key).open("rb")
        return ObjectReader(os.fstat(source.fileno()).st_size, source.read, source.close)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys that start with `prefix`, as S3 matches them; only the folder that holds the
        prefix is walked, not the whole store."""
        base = self.root.resolve()
        folder = (base / prefix.rpartition("/")[0]).resolve()
        if not folder.is_relative_to(base) or not folder.is_dir():
            return []
        keys = []
        for directory, _, files in os.walk(folder):
            for name in files:
                key = (Path(directory) / name).relative_to(base).as_posix()
                if key.startswith(prefix) and not name.endswith(".partial"):
                    keys.append(key)
        return sorted(keys)

    def list_modified(self, prefix: str) -> dict[str, datetime]:
        """Keys under the prefix with when each was last written."""
        return {
            key: datetime.fromtimestamp(self._path(key).stat().st_mtime, UTC)
            for key in self.list(prefix)
        }

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


# Files this large go up in parts of MULTIPART_CHUNKSIZE, each retried on its own.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 8 * 1024 * 1024


class S3Store:
    """An S3 bucket. Every request is retried with exponential backoff and jitter (botocore's
    standard mode: 5xx answers, throttling, dropped connections) up to `max_attempts` times;
    multipart uploads retry each part and are aborted when one part fails for good."""

    def __init__(
        self,
        *,
        endpoint: str,
        bucket: str,
        access_key: str,
        secret_key: str,
        region: str,
        max_attempts: int = 5,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        multipart_chunksize: int = MULTIPART_CHUNKSIZE,
    ):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint = endpoint
        self.max_attempts = max_attempts
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region,
            config=Config(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                # botocore waits 60 s by default: a store that accepts and then stays silent
                # would hold a phase for minutes per attempt.
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=multipart_chunksize,
            num_download_attempts=max_attempts,
        )

    def __str__(self) -> str:
        return f"S3 bucket {self.bucket!r} at {self.endpoint}"

    @contextlib.contextmanager
    def _failures(
        self, action: str, key: str, *, reading: bool = False, retried: bool = True
    ) -> Iterator[None]:
        """A key missing on a read becomes FileNotFoundError; any other failure
        ObjectStoreUnavailable, naming this store, the key and what the store answered.
        `retried` is False for what botocore does not retry: reading an answer's body."""
        from boto3.exceptions import Boto3Error
        from botocore import exceptions as botocore_errors
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer import exceptions as transfer

        try:
            yield
        except ClientError as exc:
            if reading and _is_missing(exc):
                raise FileNotFoundError(f"no object {key} in {self}") from exc
            raise self._unavailable(action, key, _client_error_reason(exc)) from exc
        except (
            BotoCoreError,
            Boto3Error,
            transfer.RetriesExceededError,
            transfer.S3UploadFailedError,
            transfer.S3DownloadFailedError,
        ) as exc:
            cause = _botocore_cause(exc)
            if isinstance(cause, ClientError):
                raise self._unavailable(action, key, _client_error_reason(cause)) from exc
            # botocore's own text names the endpoint URL: it goes to the log, not the message.
            reason = type(cause).__name__
            if not retried:
                reason += " (midway through the object, not retried)"
            elif isinstance(
                cause, botocore_errors.ConnectionError | botocore_errors.HTTPClientError
            ):
                # transient: it failed every attempt
                reason += f" ({self.max_attempts} attempts)"
            raise self._unavailable(action, key, reason, detail=str(cause)) from exc

    def _unavailable(
        self, action: str, key: str, reason: str, detail: str = ""
    ) -> ObjectStoreUnavailable:
        """The error tenants see names the key and what went wrong, never the endpoint or the
        bucket (they reach job events and API answers); the operator's log has both."""
        logger.warning(
            "%s failed to %s %r: %s%s", self, action, key, reason, f" [{detail}]" * bool(detail)
        )
        return ObjectStoreUnavailable(
            f"the object store failed to {action} {key!r}: {reason}", param=key
        )

    def ensure_bucket(self) -> None:
        with self._failures("find or create the bucket", self.bucket):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except self.client.exceptions.ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
            self.client.create_bucket(Bucket=self.bucket)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._failures("write", key):
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def put_file(self, key: str, path: Path) -> None:
        """One PUT below the multipart threshold; upload_file would start a transfer manager
        and its threads for every file, which costs more than a small file's request."""
        with self._failures("write", key):
            if path.stat().st_size < self.transfer.multipart_threshold:
                with path.open("rb") as body:  # seekable: botocore rewinds it to retry
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
            else:
                self.client.upload_file(str(path), self.bucket, key, Config=self.transfer)

    def get_bytes(self, key: str) -> bytes:
        with self._failures("read", key, reading=True):
            return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def get_file(self, key: str, path: Path) -> None:
        """One GET for an object up to one part's size; a larger one is left to the transfer
        manager (parallel ranged GETs). download_file alone would first send a HEAD for every
        object, which doubles the requests of a directory of small files."""
        from botocore.exceptions import ClientError
        from s3transfer.utils import S3_RETRYABLE_DOWNLOAD_ERRORS

        path.parent.mkdir(parents=True, exist_ok=True)
        window = self.transfer.multipart_chunksize
        with self._failures("read", key, reading=True):
            # botocore retries a request that fails before its answer; a body that breaks
            # off while it is read is fetched again here, as the transfer manager would.
            for attempt in range(1, self.max_attempts + 1):
                try:
                    # The range caps what a large object's first answer carries.
                    answer = self.client.get_object(
                        Bucket=self.bucket, Key=key, Range=f"bytes=0-{window - 1}"
                    )
                except ClientError as exc:
                    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                    if status != 416:  # 416: no byte to range over, an empty object
                        raise
                    _write_atomically(path, [])
                    return
                if _object_size(answer) > window:
                    answer["Body"].close()
                    self.client.download_file(self.bucket, key, str(path), Config=self.transfer)
                    return
                try:
                    _write_atomically(path, answer["Body"].iter_chunks(1024 * 1024))
                    return
                except S3_RETRYABLE_DOWNLOAD_ERRORS:
                    if attempt == self.max_attempts:
                        raise

    def open_read(self, key: str) -> ObjectReader:
        """One GET, whose body is read as the caller reads it; its size comes with the answer.
        botocore retries the request until the store answers. A body that breaks off midway is
        not fetched again: the caller has handed on what came before it, so the read raises
        ObjectStoreUnavailable and the caller's download ends cut short (a client retries it
        whole). get_file, whose bytes nobody has seen yet, does fetch a broken body again."""
        with self._failures("read", key, reading=True):
            answer = self.client.get_object(Bucket=self.bucket, Key=key)
        body = answer["Body"]

        def read(size: int) -> bytes:
            with self._failures("read", key, retried=False):
                return bytes(body.read(size))

        return ObjectReader(_object_size(answer), read, body.close)

    def exists(self, key: str) -> bool:
        try:
            with self._failures("look up", key, reading=True):
                self.client.head_object(Bucket=self.bucket, Key=key)
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        return sorted(self.list_modified(prefix))

    def list_modified(self, prefix: str) -> dict[str, datetime]:
        """Keys under the prefix with when each was last written."""
        modified: dict[str, datetime] = {}
        with self._failures("list", prefix):
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            ):
                modified.update(
                    (obj["Key"], obj["LastModified"]) for obj in page.get("Contents", [])
                )
        return modified

    def delete(self, key: str) -> None:
        with self._failures("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=key)


def _write_atomically(path: Path, chunks: Iterable[bytes]) -> None:
    """Write an object's bytes to `path`; a reader of `path` never sees half an object."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
    partial.replace(path)


def _object_size(answer: dict[str, Any]) -> int:
    """The whole object's size from a (ranged) GET's answer: 'bytes 0-99/1234' -> 1234."""
    content_range = answer.get("ContentRange")
    if content_range:
        return int(content_range.rsplit("/", 1)[1])
    return int(answer["ContentLength"])  # the store sent the whole object


def _is_missing(exc: Any) -> bool:
    """A 404 for the key; a missing bucket is the store's fault, not the key's."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code != "NoSuchBucket" and (status == 404 or code in ("NoSuchKey", "NotFound"))


def _client_error_reason(exc: Any) -> str:
    """What the store answered, and after how many attempts: 'HTTP 503 (SlowDown: Please
    reduce your request rate), 5 attempts'."""
    error = exc.response.get("Error", {})
    meta = exc.response.get("ResponseMetadata", {})
    code, message = error.get("Code", ""), error.get("Message", "")
    what = ": ".join(p for p in (code if not code.isdigit() else "", message) if p)
    status = meta.get("HTTPStatusCode")
    answer = f"HTTP {status}" if status else "an error"
    attempts = int(meta.get("RetryAttempts", 0)) + 1
    return f"{answer}{f' ({what})' if what else ''}, {attempts} attempt{'s' * (attempts > 1)}"


def _botocore_cause(exc: BaseException) -> BaseException:
    """boto3's transfer manager wraps the client's error in its own (S3UploadFailedError,
    RetriesExceededError); the outermost botocore error in the chain says what went wrong."""
    from botocore.exceptions import BotoCoreError, ClientError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ClientError | BotoCoreError):
            return current
        seen.add(id(current))
        current = (
            current.__cause__ or current.__context__ or getattr(current, "last_exception", None)
        )
    return exc


def make_store(settings: Settings) -> ObjectStore:
    if settings.s3_endpoint:
        store = S3Store(
            endpoint=settings.s3_endpoint,
            bucket=settings.s3_bucket,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            max_attempts=settings.s3_max_attempts,
            connect_timeout=settings.s3_connect_timeout_seconds,
            read_timeout=settings.s3_read_timeout_seconds,
        )
        store.ensure_bucket()
        return store
    return LocalStore(settings.object_store_dir)


@lru_cache
def get_store() -> ObjectStore:
    return make_store(get_settings())
