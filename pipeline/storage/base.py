"""The storage contract both backends implement: the Storage interface, its errors and counters,
and the key rules (see pipeline/storage/__init__.py for the rules and for opening a storage).

The backends (pipeline.storage.s3, pipeline.storage.local) import this module only, and
pipeline.storage imports them: one direction, no import cycle.
"""
from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import threading
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlsplit

MAX_KEY_BYTES = 1024  # S3's limit on a full object key, prefix included
RESERVED_PREFIX = ".op4ksr-"  # names of our temp files and write checks; never listed



class StorageError(RuntimeError):
    """An object-store or filesystem operation failed; the message names the uri, never credentials."""

    code: str = ""  # the S3 error code or exception class, for a manifest's error column


class ObjectNotFoundError(StorageError):
    """The object named by a read does not exist."""


@dataclasses.dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: its key relative to the storage's prefix, size, etag and mtime (UTC)."""

    key: str
    size: int
    etag: str
    last_modified: dt.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class IOStats:
    """Requests by kind and bytes moved, as counted by one `Storage`; subtract two snapshots for a span."""

    get_requests: int = 0
    put_requests: int = 0
    list_requests: int = 0
    head_requests: int = 0
    delete_requests: int = 0
    bytes_in: int = 0  # read from storage
    bytes_out: int = 0  # written to storage

    def __sub__(self, other: IOStats) -> IOStats:
        return IOStats(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    def __add__(self, other: IOStats) -> IOStats:
        return IOStats(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


class IOCounters:
    """Thread-safe running totals behind `Storage.stats`; `snapshot()` gives an immutable `IOStats`."""

    _KINDS = ("get", "put", "list", "head", "delete")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals = IOStats()

    def record(self, kind: str, *, bytes_in: int = 0, bytes_out: int = 0) -> None:
        if kind not in self._KINDS:
            raise ValueError(f"request kind {kind!r} is not one of {self._KINDS}")
        step = IOStats(**{f"{kind}_requests": 1}, bytes_in=bytes_in, bytes_out=bytes_out)
        with self._lock:
            self._totals = self._totals + step

    def snapshot(self) -> IOStats:
        with self._lock:
            return self._totals



class Storage(abc.ABC):
    """A prefix of an object store or a local folder, addressed by relative keys."""

    def __init__(self, spec) -> None:  # spec: a pipeline.storage.StorageSpec
        self.spec = spec
        self.stats = IOCounters()

    def __reduce__(self):
        # Clients and counters stay behind; the receiving process reopens from the spec.
        return (type(self.spec).open, (self.spec,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    @abc.abstractmethod
    def iter_objects(
        self, extensions: Iterable[str] | None = None, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        """Yield objects under the prefix in key order (UTF-8 byte order, as S3 lists), one page at a time.

        `extensions` keeps keys ending in one of them (case-insensitive, with or without the
        dot); `start_after` skips keys up to and including it.
        """

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; ObjectNotFoundError if it does not exist."""

    @abc.abstractmethod
    def get_file(self, key: str, path: str) -> int:
        """Stream the object to a local file; returns its size."""

    @abc.abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """The object's metadata, or None if it does not exist."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store `data` under a `safe_key` key, replacing any object there, all or nothing."""

    @abc.abstractmethod
    def put_file(self, key: str, path: str, content_type: str | None = None) -> None:
        """Store a local file under a `safe_key` key, streaming it rather than reading it whole."""

    def put_tree(self, folder, prefix: str = "", last: Iterable[str] = ()) -> int:
        """Upload every file under the local `folder` to `prefix` + its path there, in sorted order, the
        relative paths in `last` after all others (a marker whose presence means the rest is there);
        returns how many."""
        folder, last = Path(folder), list(last)
        paths = sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() not in last)
        for path in paths + [folder / name for name in last]:
            self.put_file(prefix + path.relative_to(folder).as_posix(), str(path))
        return len(paths) + len(last)

    @abc.abstractmethod
    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        """Store `data` only if no object is at `key`: True if written, False if one was there.

        Of writers racing for one key at most one gets True; the run lock
        (`pipeline.run.incremental`) is built on it.
        """

    @abc.abstractmethod
    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> bool:
        """Replace the object at `key` only while its etag is `etag` (compare-and-swap): True if
        written, False if it changed or is gone."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abc.abstractmethod
    def uri_for(self, key: str) -> str:
        """The full uri (s3://bucket/prefix/key or an absolute path) a person can use to find the object."""

    @abc.abstractmethod
    def check_writable(self) -> None:
        """Raise StorageError now, before any work, if objects cannot be written here."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def child(self, prefix: str) -> Storage:
        """The folder `prefix` under this prefix as a storage of its own: StorageSpec.child, opened."""
        return self.spec.child(prefix).open()



def safe_key(key: str) -> str:
    """`key` normalised for use under an output prefix; ValueError if it could escape it.

    Empty and `.` segments are dropped (`a//./b` -> `a/b`). Refused: empty keys, `..` segments,
    a leading or trailing `/`, backslashes (a separator on Windows tools), NUL and other control
    characters. Spaces and any other unicode are kept.
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"key {key!r} is empty: give a relative key such as 'photos/cat.jpg'")
    if key.startswith("/"):
        raise ValueError(f"key {key!r} starts with '/': keys are relative to the prefix; drop the '/'")
    if key.endswith("/"):
        raise ValueError(f"key {key!r} ends with '/', which names a folder: give an object key")
    if "\\" in key:
        raise ValueError(f"key {key!r} contains a backslash: use '/' as the separator")
    bad = next((c for c in key if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        raise ValueError(f"key {key!r} contains control character {bad!r}: rename the object")
    segments = [s for s in key.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise ValueError(f"key {key!r} has a '..' segment that would leave the prefix: rename the object")
    if not segments:
        raise ValueError(f"key {key!r} names no object: give a relative key such as 'photos/cat.jpg'")
    return "/".join(segments)


def require_safe_key(key: str) -> str:
    """`key` itself if it is already normalised; writes use this so nothing is silently renamed."""
    normal = safe_key(key)
    if normal != key:
        raise ValueError(f"key {key!r} is not normalised: write to safe_key(key) = {normal!r}")
    return key


def normalise_extensions(extensions: Iterable[str] | None) -> tuple[str, ...] | None:
    """Lower-case extensions with a leading dot, or None for no filter."""
    if extensions is None:
        return None
    if isinstance(extensions, str):
        extensions = [extensions]
    normal = tuple(e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions if e)
    if not normal:
        raise ValueError("extensions is empty: give e.g. ['.jpg', '.png'] or None for every object")
    return normal


def redact_url(url: str) -> str:
    """`url` without any user:password part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="<hidden>@" + parts.netloc.rsplit("@", 1)[1]).geturl()


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret string replaced, for messages built from server replies."""
    for secret in secrets:
        text = text.replace(secret, "<hidden>")
    return text
