"""A model actor with model.offload=blocks: it warms up streaming, its images equal the resident actor's,
and a backfill with it runs end to end with the actors' resident memory in the pool's report."""
import dataclasses
import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from actors.upscaler import UpscaleActor
from jobs.config import load_config
from jobs.specs import actor_options, build_run_spec, size_policy
from op4ksr.loading import ModelSpec
from op4ksr.offload import streamer_of
from pipeline.fleet.spec import ModelSource
from pipeline.run.backfill import run_backfill
from pipeline.run.fetch import FetchContext, FetchDecode
from pipeline.storage import StorageSpec


def _png(h, w, seed):
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def _run_actor(tmp_path, offload: str) -> tuple[UpscaleActor, bytes]:
    """One actor (tiny-trained, `offload`) over one fetched input; (the actor, its output PNG file)."""
    (tmp_path / "in").mkdir(exist_ok=True)
    (tmp_path / "in" / "a.png").write_bytes(_png(12, 16, 0))
    out = tmp_path / f"out-{offload}"
    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(out)), "r1", "m", "p", "png",
                       dataclasses.replace(size_policy(load_config()), min_side=8))
    fetched = FetchDecode(ctx)(pa.table({"key": ["a.png"], "etag": ["e"]}))
    options = actor_options(load_config([], ["actors.warmup_shapes=[[32,32]]"]), StorageSpec(str(out)), "p")
    actor = UpscaleActor(ModelSource(spec=ModelSpec(source="tiny-trained", offload=offload)), options)
    (row,) = actor(fetched).to_pylist()
    assert row["status"] == "ok", row
    return actor, (out / row["output_key"]).read_bytes()


def test_a_streaming_actor_warms_up_and_writes_the_resident_actors_pixels(tmp_path):
    streaming, image = _run_actor(tmp_path, "blocks")
    streamer = streamer_of(streaming.model.transformer)
    assert streaming.warmup_seconds > 0
    assert streamer.visits == 2 * 2  # two blocks, at the warm-up and at the image
    _, resident_image = _run_actor(tmp_path, "none")
    pixels = [np.asarray(Image.open(io.BytesIO(data))) for data in (image, resident_image)]
    # the same picture: two model objects' forwards agree within tests/tolerance.py's FORWARD_ATOL, which can
    # flip an 8-bit rounding, so one level is allowed (the files' provenance metadata differs per write)
    assert pixels[0].shape == pixels[1].shape
    assert np.abs(pixels[0].astype(np.int16) - pixels[1].astype(np.int16)).max() <= 1


@pytest.mark.slow
def test_a_backfill_with_offload_blocks_runs_end_to_end_and_reports_actor_memory(s3_server, s3_bucket, ray_local):
    store = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    for i, (h, w) in enumerate([(24, 32), (32, 24)]):
        store.put(f"img-{i}.png", _png(h, w, i))
    cfg = load_config([], [f"input.uri=s3://{s3_bucket}/in/", f"output.uri=s3://{s3_bucket}/out/",
                           f"storage.endpoint_url={s3_server.endpoint_url}", "model.offload=blocks"])
    summary = run_backfill(build_run_spec(cfg, "run-offload", "", credentials=s3_server.credentials), UpscaleActor)
    assert (summary.total, summary.ok, summary.failed) == (2, 2, 0)
    assert 100e6 < summary.actors_rss_peak_bytes < 8e9  # a process with torch loaded, not an unread zero
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    assert json.loads(out.get("runs/run-offload/summary.json"))["actors_rss_peak_bytes"] == summary.actors_rss_peak_bytes
