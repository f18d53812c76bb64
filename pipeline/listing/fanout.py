"""Listing a large prefix in parallel: one lister per common prefix (folder), merged back into key order.

S3 lists one page of 1,000 keys per request, one request after another: 10,000 round trips for
10 M keys. Folders split the key space into ranges that do not overlap, so each can be listed
by its own thread and the results concatenated in folder order give exactly the sequential
listing (a key directly under the prefix sorts before or after a whole folder, never inside it).
The consumer takes folders in order, so a lister ahead of it keeps its first PAGES_AHEAD pages
in memory and writes the rest to a local Arrow file: no lister waits for the consumer, and
memory holds at most `workers` x PAGES_AHEAD pages whatever the folders' sizes.

Folders are found with the Storage interface alone: list from a point, and the first key that
has a `/` names the next folder; the search then starts again after that folder (its name
followed by U+10FFFF, which sorts after every key inside it). That costs one request per folder,
so it pays when folders hold many pages each.
"""
from __future__ import annotations

import contextlib
import os
import queue
import tempfile
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

import pyarrow as pa

from pipeline.storage import ObjectInfo, Storage, normalise_extensions

PAGES_AHEAD = 8  # pages (of 1,000 keys) a folder lister keeps in memory; the rest waits on disk
PAGE_KEYS = 1000
_PAST_FOLDER = "\U0010ffff"  # the largest code point: folder + it sorts after every key in the folder
_END = object()


def iter_fanned_out(storage: Storage, extensions: Iterable[str] | None = None, workers: int = 8,
                    start_after: str | None = None) -> Iterator[ObjectInfo]:
    """What `storage.iter_objects(extensions, start_after)` yields, each top-level folder listed by its own thread."""
    if workers < 1:
        raise ValueError(f"workers={workers} must be at least 1")
    exts = normalise_extensions(extensions)
    stop = threading.Event()
    live: set[_FolderLister] = set()  # listers not read to the end, whose spill files may remain
    try:
        with ThreadPoolExecutor(workers, thread_name_prefix="op4ksr-list") as pool:
            ahead: deque = deque()  # in key order: ObjectInfo (a key under no folder) or a _FolderLister
            folders = 0
            try:
                for item in _segments(storage, start_after):
                    if isinstance(item, tuple):
                        lister = _FolderLister(pool, storage, *item, exts, stop)
                        live.add(lister)
                        ahead.append(lister)
                        folders += 1
                    elif exts is None or item.key.lower().endswith(exts):
                        ahead.append(item)
                    while folders >= workers or len(ahead) > PAGE_KEYS:
                        head = ahead.popleft()
                        folders -= isinstance(head, _FolderLister)
                        yield from _drain(head, live)
                while ahead:
                    yield from _drain(ahead.popleft(), live)
            finally:
                stop.set()  # listers still running (a limit cut the listing short) give up
    finally:
        for lister in live:  # the pool has ended: every lister has put all it will
            lister.discard()


def _drain(item, live: set) -> Iterator[ObjectInfo]:
    if isinstance(item, _FolderLister):
        yield from item.objects()
        live.discard(item)
    else:
        yield item


def _segments(storage: Storage, start_after: str | None) -> Iterator[ObjectInfo | tuple[str, str]]:
    """Keys under no folder, and (folder, where its listing starts after) for each folder, in key order."""
    after = start_after
    while True:
        folder = None
        for obj in storage.iter_objects(start_after=after):
            if "/" in obj.key:
                folder = obj.key.split("/", 1)[0] + "/"
                break
            yield obj
        if folder is None:
            return
        if after is not None and folder + _PAST_FOLDER <= after:  # listed from the start again
            raise ValueError(f"{storage!r} ignored start_after={after!r}: it cannot be listed in parallel")
        yield folder, (after if after and after.startswith(folder) else folder)
        after = folder + _PAST_FOLDER


class _FolderLister:
    """Lists one folder on a pool thread: its first PAGES_AHEAD pages into memory, the rest into a
    local Arrow file, so that it never waits for the consumer (which reads folders in order) and
    memory stays bounded; the consumer reads the file once the folder is listed."""

    def __init__(self, pool: ThreadPoolExecutor, storage: Storage, folder: str, start_after: str, exts, stop):
        self.folder, self.exts, self.stop = folder, exts, stop
        self.pages: queue.Queue = queue.Queue()  # pages, then the spill file's path (if any), then _END
        self.in_memory = threading.Semaphore(PAGES_AHEAD)
        pool.submit(self._run, storage, start_after)

    def _run(self, storage: Storage, start_after: str) -> None:
        spill = None
        try:
            page = []
            for obj in storage.iter_objects(start_after=start_after):
                if not obj.key.startswith(self.folder) or self.stop.is_set():
                    break
                if self.exts is None or obj.key.lower().endswith(self.exts):
                    page.append(obj)
                if len(page) >= PAGE_KEYS:
                    spill = self._hand_over(page, spill)
                    page = []
            spill = self._hand_over(page, spill)
            if spill is not None:
                spill.close()
                self.pages.put(spill.path)
            self.pages.put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            if spill is not None:
                spill.discard()
            self.pages.put(exc)

    def _hand_over(self, page: list[ObjectInfo], spill: _Spill | None) -> _Spill | None:
        """Into memory while fewer than PAGES_AHEAD pages wait there and nothing was spilled yet, else to disk."""
        if not page:
            return spill
        if spill is None and self.in_memory.acquire(blocking=False):
            self.pages.put(page)
            return None
        spill = spill or _Spill()
        spill.write(page)
        return spill

    def discard(self) -> None:
        """Remove the spill file of a folder the consumer did not read to the end."""
        while not self.pages.empty():
            item = self.pages.get_nowait()
            if isinstance(item, str):
                with contextlib.suppress(OSError):
                    os.remove(item)

    def objects(self) -> Iterator[ObjectInfo]:
        while True:
            item = self.pages.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, str):
                yield from _Spill.read(item)
                continue
            self.in_memory.release()
            yield from item


class _Spill:
    """A folder's pages past the first few, in a local Arrow IPC file (removed once read)."""

    SCHEMA = pa.schema([("key", pa.string()), ("size", pa.int64()), ("etag", pa.string()),
                        ("last_modified", pa.timestamp("us", tz="UTC"))])

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="op4ksr-listing-", suffix=".arrow")
        os.close(fd)
        self.writer = pa.ipc.new_file(self.path, self.SCHEMA)

    def write(self, page: list[ObjectInfo]) -> None:
        self.writer.write_batch(pa.record_batch([[o.key for o in page], [o.size for o in page],
                                                 [o.etag for o in page], [o.last_modified for o in page]],
                                                schema=self.SCHEMA))

    def close(self) -> None:
        self.writer.close()

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
        with contextlib.suppress(OSError):
            os.remove(self.path)

    @classmethod
    def read(cls, path: str) -> Iterator[ObjectInfo]:
        try:
            with pa.memory_map(path) as source:
                reader = pa.ipc.open_file(source)
                for i in range(reader.num_record_batches):
                    columns = reader.get_batch(i).to_pydict()
                    yield from map(ObjectInfo, columns["key"], columns["size"], columns["etag"],
                                   columns["last_modified"])
        finally:
            os.remove(path)
