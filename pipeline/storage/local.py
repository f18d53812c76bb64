"""A local folder behind the `Storage` interface.

- etag is `<size hex>-<mtime ns hex>`, not an md5: listing a catalog must not read every image.
  Any rewrite changes the mtime, so the etag still tells a changed input from an unchanged one.
- Writes go to a temp file in the same folder, are fsynced and renamed over the target, so a
  reader (or a rerun after a crash) sees the old object or the whole new one, never a part.
- `put_if_absent` publishes its temp file with link(2), which fails on an existing name as
  O_EXCL does but never shows a half-written file; `put_if_match` compares and replaces under an
  flock on a hidden sidecar file, so it is exclusive between processes of one host (and NFS
  clients with working locks).
- Symlinks are not listed, and any key whose path resolves outside the folder is refused.
- Listing holds the names of one folder at a time (it must sort them to match S3's order).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import shutil
import tempfile
import uuid
from typing import Iterable, Iterator

from pipeline.storage.base import (
    RESERVED_PREFIX,
    ObjectInfo,
    ObjectNotFoundError,
    Storage,
    StorageError,
    normalise_extensions,
    require_safe_key,
)

_CHUNK = 1 << 20


class LocalStorage(Storage):
    """Objects are files under `spec.uri` (an absolute path); keys use '/' separators."""

    def __init__(self, spec) -> None:  # spec: a pipeline.storage.StorageSpec
        super().__init__(spec)
        self.root = spec.uri

    def uri_for(self, key: str) -> str:
        return self._path_for(key)

    def _path_for(self, key: str) -> str:
        require_safe_key(key)
        path = os.path.join(self.root, *key.split("/"))
        real_root = os.path.realpath(self.root)
        if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
            raise ValueError(f"key {key!r} resolves outside {self.root} through a symlink: refusing it")
        return path

    # -- listing -------------------------------------------------------------------------

    def iter_objects(
        self, extensions: Iterable[str] | None = None, start_after: str | None = None
    ) -> Iterator[ObjectInfo]:
        if not os.path.isdir(self.root):
            raise StorageError(f"folder {self.root} does not exist: fix the input uri")
        return self._walk(self.root, "", normalise_extensions(extensions), start_after)

    def _walk(self, folder: str, rel: str, exts, start_after: str | None) -> Iterator[ObjectInfo]:
        for sort_name, is_dir in self._sorted_entries(folder):
            if is_dir:
                sub = rel + sort_name  # ends with '/'
                # Skip a whole subtree when every key in it sorts at or before start_after.
                if start_after is not None and start_after > sub and not start_after.startswith(sub):
                    continue
                yield from self._walk(os.path.join(folder, sort_name[:-1]), sub, exts, start_after)
                continue
            key = rel + sort_name
            if start_after is not None and key <= start_after:
                continue
            if exts is not None and not key.lower().endswith(exts):
                continue
            try:
                st = os.stat(os.path.join(folder, sort_name), follow_symlinks=False)
            except FileNotFoundError:
                continue  # removed since the folder was read
            yield _info(key, st)

    def _sorted_entries(self, folder: str) -> list[tuple[str, bool]]:
        """(name, is_dir) of one folder in S3 key order: a folder sorts as 'name/'."""
        self.stats.record("list")
        try:
            with os.scandir(folder) as it:
                entries = []
                for e in it:
                    if e.name.startswith(RESERVED_PREFIX):
                        continue
                    if e.is_dir(follow_symlinks=False):
                        entries.append((e.name + "/", True))
                    elif e.is_file(follow_symlinks=False):
                        entries.append((e.name, False))
        except FileNotFoundError:
            return []  # removed while listing
        except OSError as exc:
            raise StorageError(f"listing {folder} failed ({exc.strerror}): check its permissions") from None
        # str order is code-point order, which is UTF-8 byte order: the order S3 lists in.
        entries.sort()
        return entries

    # -- reads ---------------------------------------------------------------------------

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path_for(key)
        self.stats.record("head")
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageError(f"head {path} failed ({exc.strerror})") from None
        return _info(key, st) if os.path.isfile(path) else None

    def get(self, key: str) -> bytes:
        path = self._path_for(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self.stats.record("get")
            raise ObjectNotFoundError(f"{path} does not exist") from None
        except OSError as exc:
            self.stats.record("get")
            raise StorageError(f"reading {path} failed ({exc.strerror})") from None
        self.stats.record("get", bytes_in=len(data))
        return data

    def get_file(self, key: str, path: str) -> int:
        src = self._path_for(key)
        try:
            shutil.copyfile(src, path)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            self.stats.record("get")
            if not os.path.isfile(src):
                raise ObjectNotFoundError(f"{src} does not exist") from None
            raise StorageError(f"copying {src} to {path} failed ({exc.strerror})") from None
        except OSError as exc:
            self.stats.record("get")
            raise StorageError(f"copying {src} to {path} failed ({exc.strerror})") from None
        size = os.path.getsize(path)
        self.stats.record("get", bytes_in=size)
        return size

    # -- writes --------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._write_atomically(key, lambda f: f.write(data))
        self.stats.record("put", bytes_out=len(data))

    def put_file(self, key: str, path: str, content_type: str | None = None) -> None:
        def copy(f) -> None:
            with open(path, "rb") as src:
                shutil.copyfileobj(src, f, _CHUNK)

        self._write_atomically(key, copy)
        self.stats.record("put", bytes_out=os.path.getsize(path))

    def put_if_absent(self, key: str, data: bytes, content_type: str | None = None) -> bool:
        written = self._write_atomically(key, lambda f: f.write(data), exclusive=True)
        self.stats.record("put", bytes_out=len(data) if written else 0)
        return written

    def put_if_match(self, key: str, data: bytes, etag: str, content_type: str | None = None) -> bool:
        target = self._path_for(key)
        guard = os.path.join(os.path.dirname(target), f"{RESERVED_PREFIX}cas-{os.path.basename(target)}")
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            # The sidecar is never deleted: removing a lock file lets two processes lock two files.
            with open(guard, "a") as held:
                fcntl.flock(held, fcntl.LOCK_EX)  # released when the file is closed
                current = self.head(key)
                if current is None or current.etag != etag:
                    return False
                self.put(key, data, content_type)
                return True
        except OSError as exc:
            raise StorageError(f"conditional write of {target} failed ({exc.strerror})") from None

    def _write_atomically(self, key: str, write, exclusive: bool = False) -> bool:
        """Write through a temp file; with `exclusive`, only if nothing is at `key` (else False)."""
        target = self._path_for(key)
        tmp = None
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = os.path.join(os.path.dirname(target), f"{RESERVED_PREFIX}tmp-{uuid.uuid4().hex}")
            # os.open with 0o666 so the umask applies, as for any new file (mkstemp forces 0600).
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())  # the rename must not outlive the data in a crash
            if exclusive:
                try:
                    os.link(tmp, target)  # the temp file is removed below
                except FileExistsError:
                    return False
                return True
            os.replace(tmp, target)
            tmp = None
            return True
        except OSError as exc:
            raise StorageError(f"writing {target} failed ({exc.strerror}): check the output folder") from None
        finally:
            if tmp is not None:
                _remove_quietly(tmp)

    def delete(self, key: str) -> None:
        path = self._path_for(key)
        self.stats.record("delete")
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(f"deleting {path} failed ({exc.strerror})") from None

    def check_writable(self) -> None:
        try:
            os.makedirs(self.root, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.root, prefix=RESERVED_PREFIX + "write-check-")
            os.close(fd)
            os.remove(probe)
        except OSError as exc:
            raise StorageError(
                f"output folder {self.root} is not writable ({exc.strerror}): fix its permissions or the uri"
            ) from None


def _info(key: str, st: os.stat_result) -> ObjectInfo:
    modified = dt.datetime.fromtimestamp(st.st_mtime_ns / 1e9, tz=dt.timezone.utc)
    return ObjectInfo(key, st.st_size, f"{st.st_size:x}-{st.st_mtime_ns:x}", modified)


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass
