"""The actor's contract, called in-process as Ray would call it: a block of fetched records in,
manifest records out (no pixels), the image and then its report written by the actor itself."""
import dataclasses
import io
import json

import pyarrow as pa
import pytest
import torch
from PIL import Image

from actors.upscaler import UpscaleActor
from jobs.config import load_config
from jobs.specs import actor_options, size_policy
from op4ksr.loading import ModelSpec
from pipeline.run.fetch import FETCHED_SCHEMA, FetchContext, FetchDecode
from pipeline.manifest.records import MANIFEST_SCHEMA
from pipeline.fleet.spec import ModelSource
from pipeline.storage import StorageSpec


def _png(width, height, colour):
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def fetched(tmp_path):
    """A fetched block of three inputs of two sizes and one bad input, as the fetch stage makes it."""
    (tmp_path / "in").mkdir()
    for name, data in {"a.png": _png(16, 12, "red"), "b.png": _png(16, 12, "blue"),
                       "c.png": _png(12, 16, "green"), "bad.png": b"not an image"}.items():
        (tmp_path / "in" / name).write_bytes(data)
    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out")), "r1", "m", "p", "png",
                       dataclasses.replace(size_policy(load_config()), min_side=8))
    return FetchDecode(ctx)(pa.table({"key": ["a.png", "b.png", "c.png", "bad.png"], "etag": ["e"] * 4}))


TINY = ModelSource(spec=ModelSpec(source="tiny"))


def _options(tmp_path, *overrides):
    """The actor options the default config gives, with `overrides`, writing under tmp_path/out."""
    cfg = load_config([], ["actors.warmup_shapes=[[32,32]]", *overrides])
    return actor_options(cfg, StorageSpec(str(tmp_path / "out")), "p")


@pytest.fixture
def restore_torch_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_block_becomes_manifest_records_with_images_then_reports(tmp_path, fetched, restore_torch_threads):
    assert fetched.schema == FETCHED_SCHEMA
    actor = UpscaleActor(TINY, _options(tmp_path, "actors.torch_threads=1"))
    assert torch.get_num_threads() == 1 and actor.warmup_seconds > 0

    out = actor(fetched)
    assert out.schema == MANIFEST_SCHEMA and "payload" not in out.column_names  # no pixels go back
    records = {r["key"]: r for r in out.to_pylist()}
    assert [records[k]["status"] for k in ("a.png", "b.png", "c.png", "bad.png")] == ["ok", "ok", "ok", "failed"]
    for key, (width, height) in {"a.png": (64, 48), "c.png": (48, 64)}.items():
        record = records[key]
        with Image.open(tmp_path / "out" / record["output_key"]) as image:
            assert image.size == (width, height)
        report = json.loads((tmp_path / "out" / "reports" / f"{key}.json").read_text())
        assert report["status"] == "ok" and report["output_size"] == f"{width}x{height}"
        assert record["gpu_seconds"] > 0 and record["cpu_encode_seconds"] > 0 and record["actor_id"] == actor.actor_id
    # the two 16x12 inputs shared one forward: each is charged half of it
    assert records["a.png"]["t_model"] == records["b.png"]["t_model"]
    assert records["a.png"]["gpu_seconds"] == pytest.approx(records["a.png"]["t_model"] / 2)
    assert records["bad.png"]["error_class"] and not (tmp_path / "out" / "reports" / "bad.png.json").exists()


def test_a_forward_that_fails_fails_its_images_and_not_the_batch(tmp_path, fetched, monkeypatch):
    actor = UpscaleActor(TINY, _options(tmp_path))

    def out_of_memory(x, size):
        if size == (64, 48):  # the 12x16 input's group only
            raise RuntimeError("CUDA out of memory (simulated)")
        return original(x, size)

    original = actor.model.upscale
    monkeypatch.setattr(actor.model, "upscale", out_of_memory)
    records = {r["key"]: r for r in actor(fetched).to_pylist()}
    assert records["c.png"]["status"] == "failed" and "out of memory" in records["c.png"]["error"]
    assert records["a.png"]["status"] == records["b.png"]["status"] == "ok"


def test_reports_carry_niqe_and_colour_shift_with_their_cpu_cost(tmp_path, restore_torch_threads):
    """A 48x28 photo crop becomes 192x112: two whole NIQE blocks; the 16x12 one stays below them."""
    import numpy as np
    import skimage.data

    from op4ksr.quality.niqe import niqe
    from op4ksr.quality.report import colour_shift

    (tmp_path / "in").mkdir()
    crop = skimage.data.chelsea()[100:128, 150:198]  # (28, 48, 3)
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, "PNG")
    (tmp_path / "in" / "photo.png").write_bytes(buf.getvalue())
    (tmp_path / "in" / "small.png").write_bytes(_png(16, 12, "red"))
    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out")), "r1", "m", "p", "png",
                       dataclasses.replace(size_policy(load_config()), min_side=8))
    fetched = FetchDecode(ctx)(pa.table({"key": ["photo.png", "small.png"], "etag": ["e"] * 2}))
    actor = UpscaleActor(TINY, _options(tmp_path, "actors.torch_threads=1"))
    records = {r["key"]: r for r in actor(fetched).to_pylist()}
    photo, small = records["photo.png"], records["small.png"]
    assert photo["status"] == small["status"] == "ok" and photo["output_size"] == "192x112"
    report = json.loads((tmp_path / "out" / "reports" / "photo.png.json").read_text())
    assert report["niqe"] == photo["niqe"] and report["colour_shift"] == photo["colour_shift"]
    with Image.open(tmp_path / "out" / photo["output_key"]) as image:  # the score is of the written output
        out = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)
    lr = torch.from_numpy(crop.astype(np.float32) / 255).permute(2, 0, 1)
    assert photo["niqe"] == pytest.approx(niqe(out), abs=0.05)  # 8-bit PNG vs the float output: Y rounds alike
    assert photo["colour_shift"] == pytest.approx(float(colour_shift(out[None], lr[None])[0]), abs=2 / 255)
    assert small["niqe"] is None and small["colour_shift"] >= 0  # 64x48: fewer than two 96 px blocks
    for r in (photo, small):
        assert r["t_quality"] > 0 and r["cpu_quality_seconds"] >= 0
        assert r["cpu_seconds"] >= r["cpu_quality_seconds"] + r["cpu_encode_seconds"]
