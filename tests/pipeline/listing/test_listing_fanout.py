"""Listing fanned out over folders gives exactly the sequential listing (keys, order, since, limit)."""
import datetime as dt
import itertools
import os
import time

import pytest

import pipeline.listing.fanout
from pipeline.listing.inputs import list_inputs
from pipeline.listing.fanout import iter_fanned_out
from pipeline.storage import open_storage

# Keys under no folder sort between folders ("a.jpg" < "a/..." < "a0.png" < "b/..."), a folder
# inside a folder, unicode, spaces, and files the extension filter drops.
KEYS = ["a.jpg", "a/x.jpg", "a/y/z.png", "a0.png", "b/c/d.png", "b/e.jpg", "b/notes.txt", "b.txt", "c d/é.png",
        "c d/ü/1.jpg", "z.png", *(f"many/{i:03d}.jpg" for i in range(40)), "zz/last.webp"]


def _fill(storage):
    for i, key in enumerate(KEYS):
        storage.put(key, b"x" * (i + 1))


def _keys(objects):
    return [(o.key, o.size, o.etag) for o in objects]


@pytest.fixture
def small_pages(monkeypatch):
    monkeypatch.setattr(pipeline.listing.fanout, "PAGE_KEYS", 3)  # many pages per folder, bounded queues
    monkeypatch.setattr(pipeline.listing.fanout, "PAGES_AHEAD", 1)


def _check_equal(storage):
    for exts in (None, [".jpg", ".png", ".webp"]):
        sequential = _keys(storage.iter_objects(extensions=exts))
        assert len(sequential) >= 40
        for workers in (1, 2, 8):
            assert _keys(iter_fanned_out(storage, exts, workers)) == sequential
        for after in ("a.jpg", "a/x.jpg", "b/", "b/c/d.png", "many/017.jpg", "z.png", "zz/last.webp"):
            assert _keys(iter_fanned_out(storage, exts, 3, start_after=after)) == \
                _keys(storage.iter_objects(extensions=exts, start_after=after)), after


def test_fan_out_equals_the_sequential_listing_on_a_folder(tmp_path, small_pages):
    storage = open_storage(str(tmp_path))
    _fill(storage)
    _check_equal(storage)


def test_fan_out_equals_the_sequential_listing_on_s3(s3_server, s3_bucket, small_pages):
    storage = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    _fill(storage)
    _check_equal(storage)
    before = storage.stats.snapshot().list_requests
    list(iter_fanned_out(storage, None, 4))
    # one request per folder found (6) and per folder listed (6), plus the runs of keys under no folder
    assert storage.stats.snapshot().list_requests - before <= 20


def test_list_inputs_fans_out_after_its_first_keys_with_the_same_result(tmp_path, small_pages):
    storage = open_storage(str(tmp_path))
    _fill(storage)
    old = time.time() - 3600
    for key in KEYS[::3]:
        os.utime(tmp_path / key, (old, old))
    since = dt.datetime.fromtimestamp(time.time() - 60, dt.timezone.utc)
    for kwargs in ({}, {"since": since}, {"limit": 7}, {"limit": 30, "since": since}):
        sequential = _keys(list_inputs(storage, workers=1, **kwargs))
        assert sequential and _keys(list_inputs(storage, workers=4, fan_out_after=2, **kwargs)) == sequential
        assert _keys(list_inputs(storage, workers=4, fan_out_after=0, **kwargs)) == sequential


def test_a_failing_folder_listing_raises_in_the_consumer(tmp_path, small_pages, monkeypatch):
    storage = open_storage(str(tmp_path))
    _fill(storage)
    real = type(storage).iter_objects

    def broken(self, extensions=None, start_after=None):
        if start_after == "many/":
            raise OSError("listing many/ failed")
        return real(self, extensions, start_after)

    monkeypatch.setattr(type(storage), "iter_objects", broken)
    with pytest.raises(OSError, match="many/"):
        list(iter_fanned_out(storage, None, 2))


def test_folders_past_the_memory_window_wait_on_disk_and_leave_nothing_behind(tmp_path, small_pages, monkeypatch):
    storage = open_storage(str(tmp_path / "in"))
    _fill(storage)
    spills = tmp_path / "tmp"
    spills.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(spills))
    made = []
    real_spill = pipeline.listing.fanout._Spill.__init__

    def counting(self):
        real_spill(self)
        made.append(self.path)

    monkeypatch.setattr(pipeline.listing.fanout._Spill, "__init__", counting)
    assert _keys(iter_fanned_out(storage, None, 4)) == _keys(storage.iter_objects())
    assert made and list(spills.iterdir()) == []  # the many/ folder spilled; every file read and removed
    cut = list(itertools.islice(iter_fanned_out(storage, None, 4), 5))  # a limit: the rest is abandoned
    assert _keys(cut) == _keys(storage.iter_objects())[:5]
    assert list(spills.iterdir()) == []
