"""One interface over S3-compatible object storage and local folders.

`open_storage(uri)` gives a `Storage` whose keys are relative to the uri's prefix. Two backends
implement it: `pipeline.storage.s3` (boto3; AWS, MinIO, Ceph, the embedded moto server) and
`pipeline.storage.local` (a folder). A `Storage` pickles as its `StorageSpec`, so it can be
handed to Ray workers; each process opens its own client.

Key rules (the same for both backends):
- writes (`put`, `put_file`, `delete`) take keys that are already `safe_key(key)`; a key that
  would leave the prefix is refused with ValueError before any request is made;
- S3 reads take any key verbatim, because input catalogs may hold keys such as `a//b.jpg`;
- local reads and writes refuse any path that resolves outside the folder.
"""

from __future__ import annotations

import dataclasses
import os
from urllib.parse import unquote, urlsplit

from pipeline.storage.base import (  # noqa: F401 - the storage interface, importable from here as before
    MAX_KEY_BYTES,
    RESERVED_PREFIX,
    IOCounters,
    IOStats,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    normalise_extensions,
    redact,
    redact_url,
    require_safe_key,
    safe_key,
)
from pipeline.storage.local import LocalStorage
from pipeline.storage.s3 import S3Storage


@dataclasses.dataclass(frozen=True)
class S3Credentials:
    """Explicit S3 keys, for servers such as the embedded one; real jobs use the AWS chain instead."""

    access_key_id: str
    secret_access_key: str = dataclasses.field(repr=False)
    session_token: str = dataclasses.field(default="", repr=False)

    def __repr__(self) -> str:
        # The key id is not secret by AWS's rules, but it still identifies an account: hide it too.
        return "S3Credentials(<hidden>)"

    def secrets(self) -> tuple[str, ...]:
        """The strings that must never appear in a message."""
        return tuple(s for s in (self.access_key_id, self.secret_access_key, self.session_token) if s)


@dataclasses.dataclass(frozen=True)
class StorageSpec:
    """Everything needed to reopen a storage in another process: `spec.open()`."""

    uri: str
    endpoint_url: str = ""
    region: str = "us-east-1"
    max_attempts: int = 5
    # None: the standard AWS chain (env, ~/.aws, instance or pod role). Pickled with the spec
    # when set, so pass explicit keys only for local test servers.
    credentials: S3Credentials | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts={self.max_attempts} must be at least 1")
        if self.endpoint_url and urlsplit(self.endpoint_url).scheme not in ("http", "https"):
            raise ValueError(
                f"endpoint_url {redact_url(self.endpoint_url)!r} must start with http:// or https://"
            )

    @property
    def is_s3(self) -> bool:
        return self.uri.startswith("s3://")

    def open(self) -> Storage:
        return S3Storage(self) if self.is_s3 else LocalStorage(self)

    def child(self, prefix: str) -> StorageSpec:
        """The folder `prefix` (a relative key such as runs/<id>/) under this prefix, its keys relative to it."""
        return dataclasses.replace(self, uri=normalise_uri(self.uri.rstrip("/") + "/" + prefix.strip("/")))

    def __repr__(self) -> str:
        return (
            f"StorageSpec(uri={self.uri!r}, endpoint_url={redact_url(self.endpoint_url)!r}, "
            f"region={self.region!r}, max_attempts={self.max_attempts}, "
            f"credentials={'<explicit>' if self.credentials else '<aws chain>'})"
        )



def open_storage(
    uri: str,
    *,
    endpoint_url: str = "",
    region: str = "us-east-1",
    max_attempts: int = 5,
    credentials: S3Credentials | None = None,
) -> Storage:
    """A Storage for `s3://bucket/prefix/`, a local path or a `file://` URL."""
    spec = StorageSpec(normalise_uri(uri), endpoint_url, region, max_attempts, credentials)
    return spec.open()


def normalise_uri(uri: str) -> str:
    """`s3://bucket/prefix/` with one trailing slash, or an absolute local path."""
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"storage uri {uri!r} is empty: give s3://bucket/prefix/ or a local folder")
    if "://" not in uri:
        return _absolute(uri)
    parts = urlsplit(uri)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"file uri {uri!r} names host {parts.netloc!r}: use file:///absolute/path")
        return _absolute(unquote(parts.path))
    if parts.scheme != "s3":
        raise ValueError(f"storage uri {uri!r} has scheme {parts.scheme!r}: use s3:// or a local path")
    bucket = parts.netloc
    if not 3 <= len(bucket) <= 63 or "@" in bucket:
        raise ValueError(f"bucket in {uri!r} must be 3-63 characters (S3's rule): fix the uri")
    prefix = uri[len("s3://") + len(bucket) :].lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"s3://{bucket}/{prefix}"


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
