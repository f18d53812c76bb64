"""The run's input list: streaming listing and inputs.parquet in bounded memory."""

import datetime as dt
import io
import sys
import tracemalloc

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import pipeline.listing.inputs
from pipeline.manifest.layout import output_image_key
from pipeline.listing.inputs import INPUTS_SCHEMA, list_inputs, write_inputs_parquet
from pipeline.storage import ObjectInfo, open_storage

EPOCH = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def synthetic_objects(n):
    for i in range(n):
        yield ObjectInfo(f"catalog/{i:08d} photo.jpg", 1000 + i, f"{i:032x}", EPOCH + dt.timedelta(seconds=i))


def test_list_inputs_filters_images_and_applies_the_limit(tmp_path):
    storage = open_storage(str(tmp_path))
    for key in ["a.jpg", "b.txt", "c/d.PNG", "e.webp", "f.json"]:
        storage.put(key, b"x")
    assert [o.key for o in list_inputs(storage, [".jpg", ".png", ".webp"])] == ["a.jpg", "c/d.PNG", "e.webp"]
    assert [o.key for o in list_inputs(storage, [".jpg", ".png", ".webp"], limit=2)] == ["a.jpg", "c/d.PNG"]
    assert [o.key for o in list_inputs(storage)] == ["a.jpg", "c/d.PNG", "e.webp"]  # default: images
    assert list(list_inputs(storage, limit=0)) == []
    with pytest.raises(ValueError, match="limit"):
        list_inputs(storage, limit=-1)


def test_inputs_parquet_streams_100k_rows_in_bounded_memory(tmp_path):
    storage = open_storage(str(tmp_path / "out"))
    n, batch_rows = 100_000, 10_000

    # What holding every row would cost: the row objects alone, measured on one of them.
    sample = next(synthetic_objects(1))
    held_bytes = n * sum(map(sys.getsizeof, (sample, sample.key, sample.etag, sample.last_modified)))

    # The first write imports modules (pandas, via pyarrow); keep their memory out of the peak.
    write_inputs_parquet(synthetic_objects(10), storage, "warmup.parquet")

    # Arrow buffers live outside Python's allocator: watch them through a proxy pool.
    arrow_pool = pa.proxy_memory_pool(pa.default_memory_pool())
    previous_pool = pa.default_memory_pool()
    pa.set_memory_pool(arrow_pool)
    tracemalloc.start()
    try:
        rows = write_inputs_parquet(synthetic_objects(n), storage, "runs/r1/inputs.parquet", batch_rows)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        pa.set_memory_pool(previous_pool)

    assert rows == n
    assert python_peak < held_bytes / 4, (python_peak, held_bytes)
    assert arrow_pool.max_memory() < held_bytes / 4, (arrow_pool.max_memory(), held_bytes)

    table = pq.read_table(storage.uri_for("runs/r1/inputs.parquet"))
    assert table.num_rows == n and table.schema.equals(INPUTS_SCHEMA)
    last = table.slice(n - 1).to_pylist()[0]
    assert last == {"key": f"catalog/{n - 1:08d} photo.jpg", "size": 1000 + n - 1,
                    "etag": f"{n - 1:032x}", "last_modified": EPOCH + dt.timedelta(seconds=n - 1),
                    "collides_with": None}


def test_inputs_parquet_of_an_empty_listing_has_the_schema_and_no_rows(tmp_path):
    storage = open_storage(str(tmp_path))
    assert write_inputs_parquet(iter(()), storage, "inputs.parquet") == 0
    table = pq.read_table(storage.uri_for("inputs.parquet"))
    assert table.num_rows == 0 and table.schema.equals(INPUTS_SCHEMA)


def test_inputs_parquet_round_trips_through_s3(s3_server, s3_bucket):
    storage = s3_server.open_storage(f"s3://{s3_bucket}/catalog/")
    for key in ["b.png", "a.jpg", "notes.txt", "sub/c.tif"]:
        storage.put(key, key.encode())
    out = s3_server.open_storage(f"s3://{s3_bucket}/output/")
    rows = write_inputs_parquet(list_inputs(storage), out, "runs/r1/inputs.parquet", batch_rows=2)
    assert rows == 3
    table = pq.read_table(io.BytesIO(out.get("runs/r1/inputs.parquet")))
    assert table.column("key").to_pylist() == ["a.jpg", "b.png", "sub/c.tif"]
    assert table.column("size").to_pylist() == [5, 5, 9]
    assert table.column("etag").to_pylist() == [storage.head(k).etag for k in ["a.jpg", "b.png", "sub/c.tif"]]


def test_batch_rows_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="batch_rows"):
        write_inputs_parquet(iter(()), open_storage(str(tmp_path)), "x.parquet", batch_rows=0)


def _collisions(tmp_path, keys):
    objects = [ObjectInfo(k, 1, "e", EPOCH) for k in keys]
    storage = open_storage(str(tmp_path))
    write_inputs_parquet(objects, storage, "inputs.parquet", batch_rows=2,
                         output_key=lambda key: output_image_key(key, "png"))
    return pq.read_table(storage.uri_for("inputs.parquet")).column("collides_with").to_pylist()


def test_an_input_whose_output_an_earlier_input_claims_is_marked(tmp_path):
    # a.jpg and a.png -> images/a.png; x//y.png and x/y.png -> images/x/y.png; ../z.png is unsafe
    keys = ["../z.png", "a.jpg", "a.png", "a.tif", "b.png", "x//y.png", "x/y.png"]
    assert _collisions(tmp_path, keys) == [None, None, "a.jpg", "a.jpg", None, None, "x//y.png"]


def test_collisions_are_found_within_a_bounded_window(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline.listing.inputs, "COLLISION_WINDOW", 2)  # remembers the last 2 output keys
    assert _collisions(tmp_path, ["a.jpg", "b.png", "a.png"]) == [None, None, "a.jpg"]
    assert _collisions(tmp_path, ["a.jpg", "b.png", "c.png", "a.png"]) == [None, None, None, None]
