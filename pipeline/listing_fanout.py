"""Listing a large prefix in parallel: one lister per common prefix (folder), merged back into key order.

S3 lists one page of 1,000 keys per request, one request after another: 10,000 round trips for
10 M keys. Folders split the key space into ranges that do not overlap, so each can be listed
by its own thread and the results concatenated in folder order give exactly the sequential
listing (a key directly under the prefix sorts before or after a whole folder, never inside it).

Folders are found with the Storage interface alone: list from a point, and the first key that
has a `/` names the next folder; the search then starts again after that folder (its name
followed by U+10FFFF, which sorts after every key inside it). That costs one request per folder,
so it pays when folders hold many pages each. Memory: each of at most `workers` folder listers
runs at most PAGES_AHEAD pages ahead of the consumer, so the listing stays a stream.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator

from pipeline.storage import ObjectInfo, Storage, normalise_extensions

PAGES_AHEAD = 4
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
    with ThreadPoolExecutor(workers, thread_name_prefix="op4ksr-list") as pool:
        ahead: deque = deque()  # in key order: ObjectInfo (a key under no folder) or a _FolderLister
        folders = 0
        try:
            for item in _segments(storage, start_after):
                if isinstance(item, tuple):
                    ahead.append(_FolderLister(pool, storage, *item, exts, stop))
                    folders += 1
                elif exts is None or item.key.lower().endswith(exts):
                    ahead.append(item)
                while folders >= workers or len(ahead) > PAGE_KEYS:
                    head = ahead.popleft()
                    folders -= isinstance(head, _FolderLister)
                    yield from _drain(head)
            while ahead:
                yield from _drain(ahead.popleft())
        finally:
            stop.set()  # listers still running (a limit cut the listing short) give up


def _drain(item) -> Iterator[ObjectInfo]:
    if isinstance(item, _FolderLister):
        yield from item.objects()
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
    """Lists one folder on a pool thread into a bounded queue of pages."""

    def __init__(self, pool: ThreadPoolExecutor, storage: Storage, folder: str, start_after: str, exts, stop):
        self.folder, self.exts, self.stop = folder, exts, stop
        self.pages: queue.Queue = queue.Queue(maxsize=PAGES_AHEAD)
        pool.submit(self._run, storage, start_after)

    def _run(self, storage: Storage, start_after: str) -> None:
        try:
            page = []
            for obj in storage.iter_objects(start_after=start_after):
                if not obj.key.startswith(self.folder):
                    break
                if self.exts is None or obj.key.lower().endswith(self.exts):
                    page.append(obj)
                if len(page) >= PAGE_KEYS:
                    if not self._put(page):
                        return
                    page = []
            self._put(page)
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put(exc)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.pages.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def objects(self) -> Iterator[ObjectInfo]:
        while True:
            item = self.pages.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
