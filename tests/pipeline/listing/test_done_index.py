"""The done-index: earlier runs' ok rows skip inputs without a request; the report check stays the fallback."""
import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from pipeline.listing.done_index import DoneIndex
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record
from pipeline.storage import open_storage


def _manifest_part(storage, run_id, rows, part=0):
    table = pa.Table.from_pylist([new_record(k, run_id, status=s, input_etag=e, model_id=m, params_hash=h)
                                  for k, s, e, m, h in rows], schema=MANIFEST_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.put(f"runs/{run_id}/manifest/part-{part:05d}.parquet", sink.getvalue())


def test_index_holds_the_ok_rows_of_the_same_model_and_params_only(tmp_path):
    out = open_storage(str(tmp_path))
    assert len(DoneIndex.build(out, "m", "h")) == 0  # no runs/ yet
    _manifest_part(out, "r1", [("a.png", "ok", "e1", "m", "h"), ("b.png", "failed", "e2", "m", "h"),
                               ("c.png", "ok", "e3", "other-model", "h"), ("d.png", "ok", "e4", "m", "other-params")])
    _manifest_part(out, "r1", [("e.png", "skipped", "e5", "m", "h")], part=1)
    _manifest_part(out, "r2", [("f.png", "ok", "e6", "m", "h"), ("g.png", "ok", None, "m", "h")])
    _manifest_part(out, "r3", [("h.png", "ok", "e8", "m", "h")])
    index = DoneIndex.build(out, "m", "h", exclude_run="r3")  # r3: the run being made
    assert len(index) == 3
    keys = ["a.png", "a.png", "b.png", "c.png", "d.png", "e.png", "f.png", "g.png", "h.png", "new.png"]
    etags = ["e1", "changed", "e2", "e3", "e4", "e5", "e6", None, "e8", "e9"]
    # a.png with another etag was changed since: due; g.png's null etag matches only a null etag
    assert index.contains(pa.array(keys), pa.array(etags)).tolist() == \
        [True, False, False, False, False, False, True, True, False, False]
    assert index.contains(pa.array([], pa.string()), pa.array([], pa.string())).tolist() == []


def _png(seed):
    import numpy as np
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _spec(s3_server, bucket, run_id):
    from jobs.specs import build_run_spec

    cfg = load_config([], [f"input.uri=s3://{bucket}/in/", f"output.uri=s3://{bucket}/out/",
                           f"storage.endpoint_url={s3_server.endpoint_url}"])
    return build_run_spec(cfg, run_id, "", credentials=s3_server.credentials)


def _rows(out, run_id):
    parts = sorted(o.key for o in out.iter_objects() if o.key.startswith(f"runs/{run_id}/manifest/"))
    return {r["key"]: r for p in parts for r in pq.read_table(io.BytesIO(out.get(p))).to_pylist()}


@pytest.mark.slow
def test_a_rerun_skips_done_inputs_without_gets_and_falls_back_to_reports(s3_server, s3_bucket, ray_local):
    from actors.upscaler import UpscaleActor
    from pipeline.run.backfill import run_backfill

    inputs = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    for i in range(4):
        inputs.put(f"set{i % 2}/img-{i}.png", _png(i))
    first = run_backfill(_spec(s3_server, s3_bucket, "run-1"), UpscaleActor)
    assert (first.ok, first.skipped) == (4, 0)

    # The rerun: the four done inputs come from run-1's manifest with no request; a new one is processed.
    inputs.put("set0/new.png", _png(9))
    second = run_backfill(_spec(s3_server, s3_bucket, "run-2"), UpscaleActor)
    assert (second.total, second.ok, second.skipped, second.failed) == (5, 1, 4, 0)
    rows = _rows(out, "run-2")
    skipped = [r for r in rows.values() if r["status"] == "skipped"]
    assert len(skipped) == 4 and sum(r["requests_get"] for r in skipped) == 0  # <= N/10 GETs: none at all
    assert rows["set0/new.png"]["status"] == "ok" and rows["set0/new.png"]["requests_get"] == 2  # report check + input
    assert json.loads(out.get("runs/run-2/summary.json"))["skipped"] == 4

    # A rerun of a done run starts no actor at all: nothing is due.
    third = run_backfill(_spec(s3_server, s3_bucket, "run-3"), UpscaleActor)
    assert (third.ok, third.skipped, third.failed) == (0, 5, 0)
    assert sum(r["requests_get"] for r in _rows(out, "run-3").values()) == 0
    assert third.cost["device_seconds"] == 0

    # Lose the manifests with ok rows: the index misses, the report check (one GET each) still skips.
    for run_id in ("run-1", "run-2"):
        for key in [o.key for o in out.iter_objects() if o.key.startswith(f"runs/{run_id}/manifest/")]:
            out.delete(key)
    fourth = run_backfill(_spec(s3_server, s3_bucket, "run-4"), UpscaleActor)
    assert (fourth.ok, fourth.skipped, fourth.bytes_out) == (0, 5, 0)
    assert [r["requests_get"] for r in _rows(out, "run-4").values()] == [1] * 5


def _written(storage, run_id, rows):
    """A manifest part of ok/failed rows that wrote (or not) an output key."""
    table = pa.Table.from_pylist([new_record(k, run_id, status=s, input_etag="e", model_id="m", params_hash="h",
                                             output_key=o) for k, s, o in rows], schema=MANIFEST_SCHEMA)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    storage.put(f"runs/{run_id}/manifest/part-00000.parquet", sink.getvalue())


def test_the_index_knows_who_wrote_each_output_whatever_the_model(tmp_path):
    out = open_storage(str(tmp_path))
    _written(out, "r1", [("a.jpg", "ok", "images/a.png"), ("b.png", "failed", "images/b.png"),
                         ("x//y.png", "ok", "images/x/y.png"), ("c.tif", "ok", "images/c.png")])
    _written(out, "r2", [("c.tif", "ok", "images/c.png"), ("c.png", "ok", "images/c.png")])  # an old overwrite
    owners = DoneIndex.build(out, "another-model", "another-hash").owners
    assert len(owners) == 4  # r2's c.tif repeats r1's row
    outputs = ["images/a.png", "images/a.png", "images/b.png", "images/x/y.png", "images/c.png", "images/c.png",
               "images/new.png"]
    keys = ["a.jpg", "a.png", "b.png", "x/y.png", "c.png", "c.jpg", "new.jpg"]
    assert owners.owners_of(outputs, keys, extensions=(".jpg", ".png", ".tif")) == [
        None,  # its own output: redone, not a collision
        "a.jpg",
        None,  # a failed row wrote nothing
        "an input done by an earlier run",  # x//y.png is not y's stem with a listed extension
        None,  # one of the two inputs that wrote images/c.png
        "c.png",  # the first writer found by hash among c.png, c.tif
        None]
    assert owners.owners_of([], [], ()) == [] and DoneIndex.build(open_storage(str(tmp_path / "none")), "m", "h") \
        .owners.owners_of(["images/a.png"], ["a.png"]) == [None]


def test_an_earlier_runs_output_is_claimed_before_the_listing_order(tmp_path):
    """p.png was done earlier; p.jpg, added since, lists first: p.jpg is the one refused."""
    from pipeline.listing.inputs import write_inputs_parquet
    from pipeline.manifest.layout import output_image_key
    from pipeline.storage import ObjectInfo

    out = open_storage(str(tmp_path / "out"))
    _written(out, "r1", [("p.png", "ok", "images/p.png")])
    owners = DoneIndex.build(out, "m", "h").owners
    listed = [ObjectInfo(k, 1, "e", dt.datetime.now(dt.timezone.utc)) for k in ("p.jpg", "p.png", "q.jpg", "q.png")]
    write_inputs_parquet(listed, out, "inputs.parquet", output_key=lambda k: output_image_key(k, "png"),
                         earlier_owners=lambda o, k: owners.owners_of(o, k, extensions=(".jpg", ".png")))
    collides = pq.read_table(out.uri_for("inputs.parquet")).column("collides_with").to_pylist()
    assert collides == ["p.png (done by an earlier run)", None, None, "q.jpg"]
