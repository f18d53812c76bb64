"""The backfill end to end: a real moto S3 server over HTTP and a local Ray."""
import io
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs.config import load_config
from actors.upscaler import UpscaleActor
from pipeline.run.backfill import run_backfill
from jobs.specs import build_run_spec

SIZES = [(24, 32), (32, 24), (40, 40), (16, 48)]  # (h, w): landscape, portrait, square, wide


def _png(h, w, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _catalog(s3_server, bucket, count=len(SIZES)):
    store = s3_server.open_storage(f"s3://{bucket}/in/")
    for i in range(count):
        h, w = SIZES[i % len(SIZES)]
        store.put(f"batch {i // 4}/img-{i}.png", _png(h, w, i))
    return store


def _spec(s3_server, bucket, run_id, *overrides):
    cfg = load_config([], [f"input.uri=s3://{bucket}/in/", f"output.uri=s3://{bucket}/out/",
                           f"storage.endpoint_url={s3_server.endpoint_url}", *overrides])
    return build_run_spec(cfg, run_id, "", credentials=s3_server.credentials)


def _manifest(out_store, run_id):
    parts = [o.key for o in out_store.iter_objects() if o.key.startswith(f"runs/{run_id}/manifest/")]
    tables = [pq.read_table(io.BytesIO(out_store.get(k))) for k in parts]
    return [row for t in tables for row in t.to_pylist()]


def _keys(out_store, prefix):
    return sorted(o.key for o in out_store.iter_objects() if o.key.startswith(prefix))


def test_n_inputs_give_n_outputs_reports_and_rows_then_rerun_does_nothing(s3_server, s3_bucket, ray_local):
    store = _catalog(s3_server, s3_bucket)
    store.put("broken.jpg", b"<html>503 Service Unavailable</html>")
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")

    summary = run_backfill(_spec(s3_server, s3_bucket, "run-1"), UpscaleActor)
    assert (summary.total, summary.ok, summary.failed, summary.skipped) == (5, 4, 1, 0)
    rows = {r["key"]: r for r in _manifest(out, "run-1")}
    assert len(rows) == 5 and rows["broken.jpg"]["status"] == "failed"
    assert rows["broken.jpg"]["error_class"] == "ImageDecodeError"
    for i, (h, w) in enumerate(SIZES):
        row = rows[f"batch 0/img-{i}.png"]
        assert row["status"] == "ok" and row["output_size"] == f"{4 * w}x{4 * h}"
        image = Image.open(io.BytesIO(out.get(row["output_key"])))
        assert image.size == (4 * w, 4 * h)
        report = json.loads(out.get(f"reports/batch 0/img-{i}.png.json"))
        assert report["input_etag"] == row["input_etag"] and report["model_id"] == row["model_id"]
        assert report["gpu_seconds"] > 0 and report["period_px"] == 32
    assert len(_keys(out, "images/")) == 4 and len(_keys(out, "reports/")) == 4
    assert json.loads(out.get("runs/run-1/summary.json"))["ok"] == 4

    again = run_backfill(_spec(s3_server, s3_bucket, "run-2"), UpscaleActor)
    assert (again.ok, again.skipped, again.failed) == (0, 4, 1)  # the broken file is retried, and fails again
    assert again.bytes_out == 0

    # a change of output parameters makes every image due again
    changed = run_backfill(_spec(s3_server, s3_bucket, "run-3", "output.format=jpeg", "output.quality=90"), UpscaleActor)
    assert (changed.ok, changed.skipped) == (4, 0)
    assert len(_keys(out, "images/")) == 8  # png and jpeg side by side


def test_limit_and_dry_run(s3_server, s3_bucket, ray_local):
    _catalog(s3_server, s3_bucket)
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    dry = run_backfill(_spec(s3_server, s3_bucket, "dry", "run.dry_run=true"), UpscaleActor)
    assert dry.dry_run and dry.total == 4 and dry.ok == 0 and _keys(out, "images/") == []
    assert dry.estimate["due"] == 4 and dry.estimate["estimated_usd"] is None  # no finished run to price from
    limited = run_backfill(_spec(s3_server, s3_bucket, "lim", "run.limit=2"), UpscaleActor)
    assert (limited.total, limited.ok) == (2, 2)
    again = run_backfill(_spec(s3_server, s3_bucket, "dry-2", "run.dry_run=true"), UpscaleActor)
    assert again.estimate["due"] == 2 and again.estimate["basis_run"] == "lim"
    assert again.estimate["estimated_usd"] == pytest.approx(2 * limited.cost["total_usd"] / 2)


def test_unwritable_output_is_a_clear_error_before_any_work(s3_server, s3_bucket):
    from pipeline.storage import StorageError

    spec = _spec(s3_server, s3_bucket, "x", "output.uri=s3://no-such-bucket-op4ksr/out/")
    with pytest.raises(StorageError, match="no-such-bucket-op4ksr"):
        run_backfill(spec, UpscaleActor)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_leaves_no_gaps_and_no_duplicates(s3_server, s3_bucket, ray_local, tmp_path):
    count = 16
    _catalog(s3_server, s3_bucket, count)
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    env = dict(os.environ, AWS_ACCESS_KEY_ID=s3_server.credentials.access_key_id,
               AWS_SECRET_ACCESS_KEY=s3_server.credentials.secret_access_key, RAY_ADDRESS="")
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "backfill", f"input.uri=s3://{s3_bucket}/in/",
         f"output.uri=s3://{s3_bucket}/out/", f"storage.endpoint_url={s3_server.endpoint_url}",
         "run.id=killed", "pipeline.ray_num_cpus=2", "actors.warmup_shapes=[[256,256],[512,512]]"],
        env=env, cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and len(_keys(out, "reports/")) < 2:
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
    job.wait()
    done_before = len(_keys(out, "reports/"))
    assert 2 <= done_before < count, "the kill did not land mid-run"

    summary = run_backfill(_spec(s3_server, s3_bucket, "resumed"), UpscaleActor)
    rows = _manifest(out, "resumed")
    assert len(rows) == count and len({r["key"] for r in rows}) == count
    assert summary.skipped >= done_before and summary.ok + summary.skipped == count and summary.failed == 0
    images, reports = _keys(out, "images/"), _keys(out, "reports/")
    assert len(images) == count and len(reports) == count
    for key in images:  # every image is whole
        Image.open(io.BytesIO(out.get(key))).load()


@pytest.mark.parametrize("overrides,expected", [([], (2, 4)), (["actors.max=3"], (6, 4)),
                                                (["pipeline.fetch_tasks=5", "pipeline.fetch_threads=1"], (5, 1))])
def test_fetch_tasks_default_to_two_per_actor(s3_server, overrides, expected):
    pool = _spec(s3_server, "any-bucket", "r", *overrides).pool
    assert (pool.fetch_tasks, pool.fetch_threads) == expected


def test_inputs_that_share_an_output_key_fail_the_later_one_and_overwrite_nothing(s3_server, s3_bucket, ray_local):
    """A master TIFF and its JPEG proxy both map to images/p1.png: the first listed is upscaled,
    the other fails naming it, and a rerun says the same without redoing anything."""
    jpeg, tiff = io.BytesIO(), io.BytesIO()
    Image.new("RGB", (16, 8), "red").save(jpeg, "JPEG")
    Image.new("RGB", (8, 8), "blue").save(tiff, "TIFF")
    client = s3_server.client()  # raw puts: S3 takes x//y.png, our storage only writes normalised keys
    for key, data in [("p1.jpg", jpeg.getvalue()), ("p1.tif", tiff.getvalue()), ("x//y.png", _png(8, 8, 1)),
                      ("x/y.png", _png(8, 8, 2))]:
        client.put_object(Bucket=s3_bucket, Key=f"in/{key}", Body=data)
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")

    summary = run_backfill(_spec(s3_server, s3_bucket, "run-1", "sr.min_output_side=8"), UpscaleActor)
    assert (summary.total, summary.ok, summary.failed) == (4, 2, 2)
    rows = {r["key"]: r for r in _manifest(out, "run-1")}
    for later, first, output in [("p1.tif", "p1.jpg", "images/p1.png"), ("x/y.png", "x//y.png", "images/x/y.png")]:
        assert rows[later]["error_class"] == "OutputKeyCollisionError" and rows[later]["output_key"] is None
        assert f"already the output of {first}" in rows[later]["error"] and output in rows[later]["error"]
        assert rows[first]["status"] == "ok" and rows[first]["output_key"] == output
    assert Image.open(io.BytesIO(out.get("images/p1.png"))).size == (64, 32)  # the JPEG's, 16x8 upscaled
    assert _keys(out, "reports/") == ["reports/p1.jpg.json", "reports/x/y.png.json"]

    again = run_backfill(_spec(s3_server, s3_bucket, "run-2", "sr.min_output_side=8"), UpscaleActor)
    assert (again.ok, again.failed, again.skipped) == (0, 2, 2)


def test_an_actor_pool_the_cluster_cannot_place_fails_the_run_in_time(s3_server, s3_bucket, ray_local):
    from pipeline.run.dataflow import ActorStartTimeout

    _catalog(s3_server, s3_bucket, count=1)
    spec = _spec(s3_server, s3_bucket, "no-gpu", "actors.num_gpus=1", "actors.start_timeout_s=2")  # no GPU here
    for _ in range(2):  # the first failure released the run lock: the second run fails the same way
        start = time.perf_counter()
        with pytest.raises(ActorStartTimeout, match=r"1 model actor\(s\) of 1 GPU .* actors.start_timeout_s=2"):
            run_backfill(spec, UpscaleActor)
        assert time.perf_counter() - start < 60
