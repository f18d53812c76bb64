"""Incremental backfills and the run lock: conditional writes on both backends, the lock's
life cycle, and the watermark across real runs (local folders and a local Ray)."""
import dataclasses
import datetime as dt
import io
import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from jobs.config import load_config
from pipeline.run import backfill as backfill_module
from actors.upscaler import UpscaleActor
from pipeline.run.backfill import run_backfill
from pipeline.run.incremental import (
    LOCK_KEY,
    WATERMARK_KEY,
    Increment,
    LockHolder,
    RunLock,
    RunLockedError,
    Watermark,
    parse_since,
    read_watermark,
)
from pipeline.listing.inputs import list_inputs
from jobs.specs import build_run_spec
from pipeline.storage import open_storage

UTC = dt.timezone.utc


@pytest.fixture(params=["local", "s3"])
def storage(request, tmp_path):
    """An empty output Storage on a local folder or on S3 over HTTP (the moto server)."""
    if request.param == "local":
        return open_storage(str(tmp_path / "out"))
    server = request.getfixturevalue("s3_server")
    return server.open_storage(f"s3://{request.getfixturevalue('s3_bucket')}/out/")


def _holder(run_id: str, expires: dt.datetime, host="elsewhere", pid=4242) -> bytes:
    return LockHolder(host, pid, run_id, "2026-01-01T00:00:00+00:00", expires.isoformat(), "t").to_json()


# -- conditional writes -------------------------------------------------------------------

def test_put_if_absent_writes_once(storage):
    assert storage.put_if_absent("runs/_x.json", b"first") is True
    assert storage.put_if_absent("runs/_x.json", b"second") is False
    assert storage.get("runs/_x.json") == b"first"
    assert [o.key for o in storage.iter_objects()] == ["runs/_x.json"]  # no temp or sidecar files listed


def test_put_if_match_is_a_compare_and_swap(storage):
    assert storage.put_if_match("k.json", b"x", "no-such-etag") is False  # missing object
    storage.put("k.json", b"one")
    etag = storage.head("k.json").etag
    assert storage.put_if_match("k.json", b"two", "stale-etag") is False
    assert storage.put_if_match("k.json", b"two", etag) is True
    assert storage.get("k.json") == b"two"
    assert storage.put_if_match("k.json", b"three", etag) is False  # etag moved on with the write


def test_s3_without_conditional_writes_falls_back_to_check_and_read_back(s3_server, s3_bucket):
    storage = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    client = storage._client()
    plain_put = client.put_object

    def old_server_put(**kwargs):
        if "IfNoneMatch" in kwargs or "IfMatch" in kwargs:
            raise ClientError({"Error": {"Code": "NotImplemented", "Message": "header not supported"},
                               "ResponseMetadata": {"HTTPStatusCode": 501}}, "PutObject")
        return plain_put(**kwargs)

    client.put_object = old_server_put
    assert storage.put_if_absent("a", b"1") is True and storage.put_if_absent("a", b"2") is False
    etag = storage.head("a").etag
    assert storage.put_if_match("a", b"3", "other") is False
    assert storage.put_if_match("a", b"3", etag) is True and storage.get("a") == b"3"


# -- the lock -----------------------------------------------------------------------------

def test_a_held_lock_refuses_a_second_run_and_names_the_holder(storage):
    with RunLock.acquire(storage, "night-1", 60, heartbeat=False):
        holder = json.loads(storage.get(LOCK_KEY))
        assert (holder["run_id"], holder["host"], holder["pid"]) == ("night-1", socket.gethostname(), os.getpid())
        with pytest.raises(RunLockedError, match=rf"run night-1 on host {socket.gethostname()} \(pid {os.getpid()}\)"):
            RunLock.acquire(storage, "night-2", 60, heartbeat=False)
    assert not storage.exists(LOCK_KEY)
    RunLock.acquire(storage, "night-2", 60, heartbeat=False).release()


def test_an_expired_lock_is_taken_over(storage):
    storage.put(LOCK_KEY, _holder("crashed", dt.datetime.now(UTC) - dt.timedelta(seconds=1)))
    with RunLock.acquire(storage, "next", 60, heartbeat=False):
        assert json.loads(storage.get(LOCK_KEY))["run_id"] == "next"
    assert not storage.exists(LOCK_KEY)


def test_a_live_lock_of_another_host_is_not_taken_over(storage):
    storage.put(LOCK_KEY, _holder("busy", dt.datetime.now(UTC) + dt.timedelta(seconds=60)))
    with pytest.raises(RunLockedError, match="run busy on host elsewhere"):
        RunLock.acquire(storage, "next", 60, heartbeat=False)


def test_the_lock_of_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    storage = open_storage(str(tmp_path / "out"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with RunLock.acquire(storage, "alive", 60, heartbeat=False) as mine:
        body = dataclasses.replace(mine.holder, run_id="killed", pid=dead.pid, token="t").to_json()
    storage.put(LOCK_KEY, body)  # as a run killed with SIGKILL leaves it
    with RunLock.acquire(storage, "next", 60, heartbeat=False):
        assert json.loads(storage.get(LOCK_KEY))["run_id"] == "next"


def test_heartbeat_refreshes_and_a_lost_lock_is_left_alone(tmp_path):
    storage = open_storage(str(tmp_path / "out"))
    lock = RunLock.acquire(storage, "slow", 0.4)  # a beat every 0.1 s
    first = lock.holder.expires_at
    deadline = time.time() + 10
    while LockHolder.from_json(storage.get(LOCK_KEY)).expires_at <= first and time.time() < deadline:
        time.sleep(0.05)
    assert LockHolder.from_json(storage.get(LOCK_KEY)).expires_at > first
    lock.release()
    assert not storage.exists(LOCK_KEY)

    lock = RunLock.acquire(storage, "paused", 60, heartbeat=False)
    storage.put(LOCK_KEY, _holder("usurper", dt.datetime.now(UTC) + dt.timedelta(seconds=60)))
    assert lock.refresh() is False and "usurper" in lock.lost
    lock.release()
    assert json.loads(storage.get(LOCK_KEY))["run_id"] == "usurper"  # not ours to delete


# -- since and the watermark rules --------------------------------------------------------

def test_parse_since():
    assert parse_since(None) is None and parse_since("last") == "last"
    assert parse_since("2026-05-01T02:00:00Z") == dt.datetime(2026, 5, 1, 2, tzinfo=UTC)
    assert parse_since("2026-05-01T04:00:00+02:00") == dt.datetime(2026, 5, 1, 2, tzinfo=UTC)
    assert parse_since("2026-05-01") == dt.datetime(2026, 5, 1, tzinfo=UTC)  # no zone: UTC
    with pytest.raises(ValueError, match="run.since='yesterday'"):
        parse_since("yesterday")


def test_list_inputs_keeps_what_was_modified_after_since(tmp_path):
    store = open_storage(str(tmp_path / "in"))
    for name, day in (("old.png", 1), ("new.png", 3)):
        store.put(name, b"x")
        stamp = dt.datetime(2026, 5, day, tzinfo=UTC).timestamp()
        os.utime(tmp_path / "in" / name, (stamp, stamp))
    since = dt.datetime(2026, 5, 2, tzinfo=UTC)
    assert [o.key for o in list_inputs(store, since=since)] == ["new.png"]
    assert [o.key for o in list_inputs(store, since=since, limit=0)] == []


def _local_spec(tmp_path, run_id, *overrides):
    cfg = load_config([], [f"input.uri={tmp_path / 'in'}", f"output.uri={tmp_path / 'out'}",
                           "run.watermark_margin_seconds=0", *overrides])
    return build_run_spec(cfg, run_id, "")


def test_build_run_spec_refuses_a_bad_since(tmp_path):
    with pytest.raises(ValueError, match="run.since='soon'"):
        _local_spec(tmp_path, "r", "run.since=soon")


@pytest.mark.parametrize(("overrides", "summary", "moves"), [
    ((), dict(total=3, failed=0, given_up=0), True),
    ((), dict(total=3, failed=1, given_up=0), False),
    ((), dict(total=3, failed=1, given_up=1), True),    # an input given up on is not retried: it holds nothing
    ((), dict(total=3, failed=2, given_up=1), False),
    (("run.limit=3",), dict(total=3, failed=0, given_up=0), False),       # the limit may have cut the listing
    (("run.limit=5",), dict(total=3, failed=0, given_up=0), True),
    (("run.since=2999-01-01",), dict(total=0, failed=0, given_up=0), False),  # a window after the watermark
    (("run.since=2000-01-01",), dict(total=3, failed=0, given_up=0), True),   # a window before it
])
def test_when_a_run_moves_the_watermark(tmp_path, overrides, summary, moves):
    out = open_storage(str(tmp_path / "out"))
    old = dt.datetime(2026, 1, 1, tzinfo=UTC)
    spec = _local_spec(tmp_path, "r2", *overrides)
    out.put(WATERMARK_KEY, Watermark(old, old, 0.0, "r1", spec.input.uri, spec.model_id, spec.params_hash).to_json())
    with RunLock.acquire(out, "r2", 60, heartbeat=False) as lock:
        Increment(out, spec, lock).finish(SimpleNamespace(**summary))
    assert (read_watermark(out).run_id == "r2") is moves


def test_since_last_ignores_a_watermark_of_other_parameters(tmp_path):
    out = open_storage(str(tmp_path / "out"))
    spec = _local_spec(tmp_path, "r2", "run.since=last")
    old = dt.datetime(2026, 1, 1, tzinfo=UTC)
    out.put(WATERMARK_KEY, Watermark(old, old, 0.0, "r1", spec.input.uri, spec.model_id, "other").to_json())
    assert Increment(out, spec, None).since is None
    out.put(WATERMARK_KEY, Watermark(old, old, 0.0, "r1", spec.input.uri, spec.model_id, spec.params_hash).to_json())
    assert Increment(out, spec, None).since == old


# -- real runs ----------------------------------------------------------------------------

def _png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (16, 12), (seed * 40 % 256, 90, 160)).save(out, "PNG")
    return out.getvalue()


def test_since_last_lists_only_new_inputs_and_failures_hold_the_watermark(tmp_path, ray_local):
    inputs = open_storage(str(tmp_path / "in"))
    out = open_storage(str(tmp_path / "out"))
    for name in ("a.png", "b.png"):
        inputs.put(name, _png(len(name)))

    first = run_backfill(_local_spec(tmp_path, "r1", "run.since=last"), UpscaleActor)  # no watermark yet: everything
    assert (first.total, first.ok, first.failed) == (2, 2, 0)
    assert read_watermark(out).run_id == "r1" and not out.exists(LOCK_KEY)

    inputs.put("c.png", _png(3))
    inputs.put("broken.png", b"not an image")
    second = run_backfill(_local_spec(tmp_path, "r2", "run.since=last"), UpscaleActor)
    assert (second.total, second.ok, second.failed) == (2, 1, 1)  # a and b are not even listed
    assert read_watermark(out).run_id == "r1", "a run with a failure must not move the watermark"

    inputs.delete("broken.png")  # fixed; c is listed again and skipped as done
    third = run_backfill(_local_spec(tmp_path, "r3", "run.since=last"), UpscaleActor)
    assert (third.total, third.skipped, third.failed) == (1, 1, 0)
    assert read_watermark(out).run_id == "r3" and not out.exists(LOCK_KEY)


def test_run_backfill_stops_at_a_held_lock_and_releases_its_own_on_failure(tmp_path, monkeypatch):
    out = open_storage(str(tmp_path / "out"))
    open_storage(str(tmp_path / "in")).put("a.png", _png(1))
    with RunLock.acquire(out, "nightly", 60, heartbeat=False):
        with pytest.raises(RunLockedError, match="held by run nightly"):
            run_backfill(_local_spec(tmp_path, "manual"), UpscaleActor)

    def crash(*args, **kwargs):
        raise RuntimeError("the cluster went away")

    monkeypatch.setattr(backfill_module, "_run", crash)
    with pytest.raises(RuntimeError, match="went away"):
        run_backfill(_local_spec(tmp_path, "crashing"), UpscaleActor)
    assert not out.exists(LOCK_KEY) and read_watermark(out) is None


def test_since_last_never_lets_a_new_input_overwrite_an_earlier_runs_output(tmp_path, ray_local):
    """a.jpg is done by run r1; a.png arrives later and names the same output, images/a.png. A
    `--since last` run lists a.png alone: it fails as a collision naming a.jpg, with one manifest
    row, and a.jpg's image stays as it was."""
    inputs = open_storage(str(tmp_path / "in"))
    out = open_storage(str(tmp_path / "out"))
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 12), "red").save(jpeg, "JPEG")
    inputs.put("a.jpg", jpeg.getvalue())
    first = run_backfill(_local_spec(tmp_path, "r1", "run.since=last"), UpscaleActor)
    assert (first.total, first.ok) == (1, 1)
    image = out.get("images/a.png")

    inputs.put("a.png", _png(1))
    second = run_backfill(_local_spec(tmp_path, "r2", "run.since=last"), UpscaleActor)
    assert (second.total, second.ok, second.failed) == (1, 0, 1)  # a.jpg is not even listed
    parts = sorted(o.key for o in out.iter_objects() if o.key.startswith("runs/r2/manifest/"))
    rows = [r for p in parts for r in pq.read_table(io.BytesIO(out.get(p))).to_pylist()]
    assert [(r["key"], r["status"], r["error_class"]) for r in rows] == [("a.png", "failed", "OutputKeyCollisionError")]
    assert "images/a.png is already the output of a.jpg (done by an earlier run)" in rows[0]["error"]
    assert out.get("images/a.png") == image and not out.exists("reports/a.png.json")
