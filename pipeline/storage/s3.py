"""An S3 prefix (AWS, MinIO, Ceph, the embedded moto server) behind the `Storage` interface.

Retries: botocore's standard mode, `max_attempts` in total, with backoff, covers throttling
(SlowDown), 500/503 and connection errors up to the reply's headers. A body that breaks off
mid-stream is outside botocore's retries, so `get`/`get_file` retry that themselves.
Requests are counted per logical operation (one per list page), not per retried attempt.

Conditional writes (`put_if_absent`, `put_if_match`) send `If-None-Match: *` / `If-Match`, which
AWS S3 honours since 2024 (as do moto 5, MinIO and Ceph RGW). A server that answers them with
501 NotImplemented gets a weaker fallback: check, write, read back (docs/DEPLOY.md).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from typing import Callable, Iterable, Iterator

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from pipeline.storage.base import (
    MAX_KEY_BYTES,
    RESERVED_PREFIX,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    normalise_extensions,
    redact,
    redact_url,
    require_safe_key,
)

_BODY_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError)
_NOT_FOUND = ("NoSuchKey", "NotFound", "404")
_DENIED = ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled")
_CHUNK = 1 << 20


class S3Storage(Storage):
    """Objects under `s3://bucket/prefix/`; one boto3 client per process, made on first use."""

    def __init__(self, spec) -> None:  # spec: a pipeline.storage.StorageSpec
        super().__init__(spec)
        self.bucket, _, self.prefix = spec.uri[len("s3://") :].partition("/")
        self._client_lock = threading.Lock()
        self._client_and_pid: tuple[object, int] | None = None

    def _client(self):
        # boto3 clients are thread-safe but not fork- or pickle-safe: make one per process.
        pid = os.getpid()
        held = self._client_and_pid
        if held is None or held[1] != pid:
            with self._client_lock:
                held = self._client_and_pid
                if held is None or held[1] != pid:
                    held = (self._make_client(), pid)
                    self._client_and_pid = held
        return held[0]

    def _make_client(self):
        spec = self.spec
        options: dict = {}
        if spec.endpoint_url:
            # MinIO, Ceph and moto serve path-style; botocore's default checksums (since 1.36)
            # are refused by many S3-compatible servers, so send them only where required.
            options = dict(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            )
        config = Config(
            region_name=spec.region,
            retries={"mode": "standard", "total_max_attempts": spec.max_attempts},
            max_pool_connections=32,
            connect_timeout=10,
            read_timeout=60,
            **options,
        )
        kwargs: dict = {"config": config}
        if spec.endpoint_url:
            kwargs["endpoint_url"] = spec.endpoint_url
        if spec.credentials is not None:
            kwargs["aws_access_key_id"] = spec.credentials.access_key_id
            kwargs["aws_secret_access_key"] = spec.credentials.secret_access_key
            kwargs["aws_session_token"] = spec.credentials.session_token or None
        # A fresh session: boto3's default session is shared and not thread-safe.
        return boto3.session.Session().client("s3", **kwargs)

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}"

    def _read_key(self, key: str) -> str:
        """The full S3 key for a read: input keys are taken verbatim, odd as they may be."""
        if not isinstance(key, str) or not key or "\x00" in key:
            raise ValueError(f"key {key!r} is empty or contains NUL: give a key from the listing")
        full = self.prefix + key
        if len(full.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(f"key {key!r} is over S3's {MAX_KEY_BYTES}-byte limit with the prefix")
        return full

    def _write_key(self, key: str) -> str:
        return self._read_key(require_safe_key(key))

    # -- listing -------------------------------------------------------------------------

    def iter_objects(
        self, extensions: Iterable[str] | None = None, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        exts = normalise_extensions(extensions)
        request = {"Bucket": self.bucket, "Prefix": self.prefix}
        if start_after:
            request["StartAfter"] = self.prefix + start_after
        return self._iter_pages(request, exts)

    def _iter_pages(self, request: dict, exts) -> Iterator[ObjectInfo]:
        pages = self._client().get_paginator("list_objects_v2").paginate(**request)
        try:
            for page in pages:
                self.stats.record("list")
                for obj in page.get("Contents", ()):
                    key = obj["Key"][len(self.prefix) :]
                    if not key or key.endswith("/") or key.rsplit("/", 1)[-1].startswith(RESERVED_PREFIX):
                        continue  # folder markers and our own write check
                    if exts is not None and not key.lower().endswith(exts):
                        continue
                    yield ObjectInfo(key, obj["Size"], obj["ETag"].strip('"'), _utc(obj["LastModified"]))
        except (ClientError, BotoCoreError) as exc:
            raise self._error("listing", None, exc) from None

    # -- reads ---------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        full = self._read_key(key)
        self.stats.record("head")
        try:
            reply = self._client().head_object(Bucket=self.bucket, Key=full)
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise self._error("head", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("head", key, exc) from None
        return ObjectInfo(key, reply["ContentLength"], reply["ETag"].strip('"'), _utc(reply["LastModified"]))

    def get(self, key: str) -> bytes:
        chunks: list[bytes] = []

        def consume(body) -> int:
            chunks.clear()
            chunks.append(body.read())
            return len(chunks[0])

        self._get_with_retries(key, consume)
        return chunks[0]

    def get_file(self, key: str, path: str) -> int:
        def consume(body) -> int:
            with open(path, "wb") as f:
                for chunk in body.iter_chunks(_CHUNK):
                    f.write(chunk)
                return f.tell()

        return self._get_with_retries(key, consume)

    def _get_with_retries(self, key: str, consume: Callable[[object], int]) -> int:
        full = self._read_key(key)
        for attempt in range(1, self.spec.max_attempts + 1):
            try:
                body = self._client().get_object(Bucket=self.bucket, Key=full)["Body"]
                size = consume(body)
            except _BODY_ERRORS as exc:
                self.stats.record("get")
                if attempt == self.spec.max_attempts:
                    raise self._error("get", key, exc) from None
                time.sleep(min(0.1 * 2**attempt, 5.0))
                continue
            except (ClientError, BotoCoreError) as exc:
                self.stats.record("get")
                raise self._error("get", key, exc) from None
            self.stats.record("get", bytes_in=size)
            return size
        raise AssertionError("unreachable")

    # -- writes --------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._put(key, data, len(data), content_type)

    def put_file(self, key: str, path: str, content_type: str | None = None) -> None:
        # One PutObject with the open file as body (up to S3's 5 GB): botocore streams it and
        # seeks back to the start on a retry.
        with open(path, "rb") as f:
            self._put(key, f, os.fstat(f.fileno()).st_size, content_type)

    def _put(self, key: str, body, size: int, content_type: str | None) -> None:
        full = self._write_key(key)
        extra = {"ContentType": content_type} if content_type else {}
        self.stats.record("put", bytes_out=size)
        try:
            self._client().put_object(Bucket=self.bucket, Key=full, Body=body, **extra)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("put", key, exc) from None

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        if self.head(key) is not None:
            return False  # the common case, and the only guard on a server that ignores If-None-Match
        return self._put_conditional(key, data, content_type, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> bool:
        return self._put_conditional(key, data, content_type, IfMatch=f'"{etag}"')

    def _put_conditional(self, key: str, data: bytes, content_type: str | None, **condition) -> bool:
        full = self._write_key(key)
        extra = {"ContentType": content_type} if content_type else {}
        self.stats.record("put", bytes_out=len(data))
        try:
            self._client().put_object(Bucket=self.bucket, Key=full, Body=data, **extra, **condition)
            return True
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            # 412: the condition is false; 409: a concurrent conditional write to the key won.
            if _status(exc) == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            if "IfMatch" in condition and (code in _NOT_FOUND or _status(exc) == 404):
                return False  # If-Match on a missing object
            if code != "NotImplemented" and _status(exc) != 501:
                raise self._error("conditional put", key, exc) from None
        except BotoCoreError as exc:
            raise self._error("conditional put", key, exc) from None
        return self._put_checked(key, data, content_type, condition.get("IfMatch", "").strip('"'))

    def _put_checked(self, key: str, data: bytes, content_type: str | None, etag: str) -> bool:
        """The fallback for servers without conditional writes: check, write, read back.

        Two writers can still both pass the check within one round trip; the read-back makes
        the earlier one see the later one's bytes and give way (each writer's data is unique).
        """
        current = self.head(key)
        expected = current is not None and current.etag == etag if etag else current is None
        if not expected:  # etag "": put_if_absent; else put_if_match
            return False
        self.put(key, data, content_type)
        try:
            return self.get(key) == data
        except ObjectNotFoundError:
            return False

    def delete(self, key: str) -> None:
        full = self._write_key(key)
        self.stats.record("delete")
        try:
            self._client().delete_object(Bucket=self.bucket, Key=full)
        except (ClientError, BotoCoreError) as exc:
            raise self._error("delete", key, exc) from None

    def check_writable(self) -> None:
        # A real write rather than HeadBucket: a writer may lack s3:ListBucket, and only a
        # PutObject proves that writes work.
        marker = self.prefix + RESERVED_PREFIX + "write-check"
        self.stats.record("put")
        try:
            self._client().put_object(Bucket=self.bucket, Key=marker, Body=b"")
        except (ClientError, BotoCoreError) as exc:
            raise self._error("write check of", None, exc) from None
        self.stats.record("delete")
        try:
            self._client().delete_object(Bucket=self.bucket, Key=marker)
        except ClientError:
            pass  # a writer without delete rights leaves one empty, unlisted marker

    # -- errors --------------------------------------------------------------------------

    def _error(self, action: str, key: str | None, exc: Exception) -> StorageError:
        """A StorageError naming the uri and the cause; server text is scrubbed of our credentials."""
        uri = self.spec.uri if key is None else self.uri_for(key)
        where = redact_url(self.spec.endpoint_url) or "AWS"
        cls, code = StorageError, type(exc).__name__
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code") or str(_status(exc))
            attempts = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
            detail = f"{code}: {error.get('Message') or 'no message'} (after {attempts} attempt(s))"
            if code == "NoSuchBucket":
                detail = f"bucket {self.bucket!r} does not exist at {where}: create it or fix the uri"
            elif code in _NOT_FOUND or _status(exc) == 404:
                cls, detail = ObjectNotFoundError, "no such object"
            elif code in _DENIED:
                detail += "; check the credentials in the AWS chain and the bucket policy"
        elif isinstance(exc, NoCredentialsError):
            detail = "no AWS credentials found: set them in the environment, ~/.aws or an instance role"
        elif isinstance(exc, _BODY_ERRORS):
            detail = f"the reply broke off in {self.spec.max_attempts} attempt(s) ({code}: {exc})"
        elif isinstance(exc, EndpointConnectionError):
            detail = f"cannot reach {where} after {self.spec.max_attempts} attempt(s): check storage.endpoint_url"
        else:
            detail = f"{code}: {exc}"
        secrets = self.spec.credentials.secrets() if self.spec.credentials else ()
        error = cls(redact(f"{action} {uri} failed: {detail}", secrets))
        error.code = code
        return error


def _utc(moment: dt.datetime) -> dt.datetime:
    # botocore tags list replies with tzlocal and head replies with tzutc; give one zone.
    return moment.astimezone(dt.timezone.utc)


def _status(exc: ClientError) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
