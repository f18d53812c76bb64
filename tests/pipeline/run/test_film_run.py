"""Frame sequences on Ray (`op4ksr video --ray`): chunks of shots as the unit of work, one row per frame,
a failed frame filled and redone, a killed run resumed with every frame once, cost per frame and minute."""
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from actors.film import FilmChunkActor
from jobs.cli import main as cli
from jobs.config import load_config
from jobs.specs import build_run_spec, video_settings
from op4ksr.imageops import bicubic_resize
from op4ksr.video import dpx
from pipeline.manifest.frames import read_frame_rows
from pipeline.run.film_plan import read_stored_frame
from pipeline.run.film_run import run_film
from pipeline.run.film_spec import FilmSpec
from pipeline.storage import StorageSpec
from tests.synthetic_video import moving_texture

FIRST, CUT, FRAMES = 101, 5, 9  # frames 101..109; 106 starts the second shot
SIZE = (32, 48)


def _frames(count=FRAMES, cut=CUT, size=SIZE, marked=None):
    """Two unrelated panning textures, the second from frame index `cut`; frame `marked` has a white corner."""
    frames = moving_texture(cut, size=size, seed=1) + moving_texture(count - cut, size=size, seed=7)
    if marked is not None:
        frames[marked] = frames[marked].clone()
        frames[marked][:, :2, :2] = 1.0
    return frames


def _png(rgb: torch.Tensor) -> bytes:
    out = io.BytesIO()
    Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _dpx10(rgb: torch.Tensor) -> bytes:
    return dpx.write_dpx((rgb.permute(1, 2, 0).numpy() * 1023 + 0.5).astype(np.uint16), 10)


def _write(store, frames, name="reel/r", encode=_png, ext="png"):
    for i, rgb in enumerate(frames):
        store.put(f"{name}.{FIRST + i:04d}.{ext}", encode(rgb))


def _spec(inp, out, run_id, *overrides, s3=None):
    keys = [f"input.uri={inp}", f"output.uri={out}", "sr.scale=2", "video.chunk_frames=3", "video.chunk_overlap=1",
            "video.measure_flow=false", *overrides] + ([f"storage.endpoint_url={s3.endpoint_url}"] if s3 else [])
    cfg = load_config([], keys)
    run = build_run_spec(cfg, run_id, "", credentials=s3.credentials if s3 else None)
    return FilmSpec(run=run, video=video_settings(cfg), fps=float(cfg.video.fps))


def _rows(out, run_id=None):
    """Every run's frame rows under `out` (or one run's)."""
    prefix = f"runs/{run_id}/frames/" if run_id else "runs/"
    keys = [o.key for o in out.iter_objects([".parquet"]) if o.key.startswith(prefix) and "/frames/" in o.key]
    return [r for k in keys for r in read_frame_rows(out.get(k))]


def _outputs(out):
    return sorted(o.key for o in out.iter_objects([".png"]) if not o.key.startswith("runs/"))


def _expected(first, count):
    return [f"images/reel/r.{n:04d}.png" for n in range(first, first + count)]


def test_no_chunk_crosses_the_cut_and_every_frame_has_one_row_and_one_output(tmp_path, ray_local, capsys):
    inp, out = StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out"))
    _write(inp.open(), _frames())
    # flow: each chunk after a shot's first starts one frame early (a lead-in for its fusion, not written)
    summary = run_film(_spec(inp.uri, out.uri, "run-1", "video.temporal=flow"), FilmChunkActor)

    store = out.open()
    cuts = json.loads(store.get("runs/run-1/cuts/reel/r.png.json"))
    assert cuts["cuts"] == [FIRST + CUT] and cuts["shots"] == [[101, 105], [106, 109]]
    for shot in cuts["chunks"]:  # chunks of 3 frames overlapping by 1, inside each shot
        assert all(first >= FIRST + CUT or last < FIRST + CUT for first, last in shot)
    assert cuts["chunks"] == [[[101, 103], [103, 105]], [[106, 108], [108, 109]]]
    rows = _rows(store)
    assert sorted(r["frame"] for r in rows) == list(range(FIRST, FIRST + FRAMES))
    assert {r["status"] for r in rows} == {"done"} and summary["done"] == FRAMES and summary["failed"] == 0
    assert all(r["shot"] == (r["frame"] >= FIRST + CUT) for r in rows)
    assert all((r["lead_in_seconds"] > 0) == (r["chunk"] == 1) for r in rows)
    assert _outputs(store) == _expected(FIRST, FRAMES)
    with Image.open(io.BytesIO(store.get("images/reel/r.0104.png"))) as image:
        assert image.size == (2 * SIZE[1], 2 * SIZE[0]) and image.mode == "RGB"

    # the cost comes from the rows: their model seconds at cost.gpu_hour_usd (2.5), video.fps (24) frames a minute
    seconds = sum(r["seconds"] + r["lead_in_seconds"] for r in rows)
    cost = summary["cost"]
    assert cost["usd_per_frame"] == pytest.approx(seconds * 2.5 / 3600 / FRAMES)
    assert cost["usd_per_footage_minute"] == pytest.approx(cost["usd_per_frame"] * 24 * 60)
    assert json.loads(store.get("runs/run-1/summary.json"))["cost"] == cost
    ledger = pq.read_table(io.BytesIO(store.get("runs/run-1/frame_cost.parquet"))).to_pylist()
    assert sorted(r["frame"] for r in ledger) == list(range(FIRST, FIRST + FRAMES))
    assert sum(r["device_usd"] for r in ledger) == pytest.approx(cost["usd"])

    # the command's dry run: nothing due, priced at run-1's USD per frame, a minute at 25 fps
    assert cli(["video", inp.uri, "--out", out.uri, "--ray", "--dry-run", "--scale", "2", "video.chunk_frames=3",
                "video.chunk_overlap=1", "video.measure_flow=false", "video.temporal=flow", "video.fps=25"]) == 0
    printed = capsys.readouterr()
    assert f"{FRAMES} frames, {FRAMES} already done, 0 done, 0 failed" in printed.err
    estimate = json.loads(printed.out)
    assert estimate["due"] == 0 and estimate["basis_run"] == "run-1"
    assert estimate["usd_per_footage_minute"] == pytest.approx(cost["usd_per_frame"] * 25 * 60)
    assert len(_rows(store)) == FRAMES


class _FailsOnMarkedFrame(FilmChunkActor):
    """The model raises on a frame whose top-left corner is white (as a model running out of memory would)."""

    def upscale(self, rgb, size):
        if bool((rgb[:, :2, :2] == 1).all()):
            raise RuntimeError("out of memory on the marked frame")
        return super().upscale(rgb, size)


def test_a_failed_frame_is_one_failed_row_filled_from_bicubic_and_the_rerun_redoes_only_it(
        s3_server, s3_bucket, ray_local):
    marked = 4  # frame 105: the second chunk of the first shot, between two frames that succeed
    frames = _frames(marked=marked)
    inp, out = f"s3://{s3_bucket}/scans/", f"s3://{s3_bucket}/remaster/"
    _write(s3_server.open_storage(inp), frames, encode=_dpx10, ext="dpx")
    summary = run_film(_spec(inp, out, "run-1", s3=s3_server), _FailsOnMarkedFrame)

    store = s3_server.open_storage(out)
    rows = {r["frame"]: r for r in _rows(store)}
    assert len(rows) == FRAMES and summary["failed"] == 1 and summary["done"] == FRAMES - 1
    failed = rows[FIRST + marked]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: out of memory on the marked frame"
    assert rows[FIRST + marked + 1]["status"] == "done"  # the shot went on
    assert failed["output_key"] == f"images/reel/r.{FIRST + marked:04d}.dpx"
    written = read_stored_frame(store, failed["output_key"], "srgb")
    assert written.bit_depth == 10 and written.kind == "dpx"  # same format and bit depth as the scan
    source = torch.round(frames[marked] * 1023) / 1023  # the 10-bit frame the actor read
    bicubic = bicubic_resize(source[None], tuple(written.rgb.shape[-2:]))[0].clamp(0, 1)
    assert float((written.rgb - bicubic).abs().max()) <= 1 / 1023 + 1e-6  # filled from bicubic, to the code value

    again = run_film(_spec(inp, out, "run-2", s3=s3_server), FilmChunkActor)
    assert again["chunks"] == 1 and again["due"] == 1 and again["done"] == 1
    (redone,) = _rows(store, "run-2")
    assert redone["frame"] == FIRST + marked and redone["status"] == "done"


def _settled_rows(store, run_id, quiet_seconds=2.0, most_seconds=20.0):
    """The run's rows once no new chunk's rows have come for `quiet_seconds`: a killed driver's actor
    process may finish the chunk it held before it notices its raylet is gone."""
    rows, since, deadline = _rows(store, run_id), time.time(), time.time() + most_seconds
    while time.time() - since < quiet_seconds and time.time() < deadline:
        time.sleep(0.2)
        now = _rows(store, run_id)
        if len(now) != len(rows):
            rows, since = now, time.time()
    return rows


def killed_mid_run(inp: StorageSpec, out: StorageSpec) -> list[dict]:
    """`op4ksr video IN --out OUT --ray` (run `killed`, chunks of 2 frames) in its own process group,
    SIGKILLed with its Ray workers once its first chunk's rows are stored; the rows it left."""
    job = subprocess.Popen(
        [sys.executable, "-m", "jobs.cli", "video", inp.uri, "--out", out.uri, "--ray", "--scale", "2",
         "run.id=killed", "pipeline.ray_num_cpus=2", "video.chunk_frames=2", "video.chunk_overlap=0",
         "video.measure_flow=false"],
        env=dict(os.environ, RAY_ADDRESS=""), cwd=os.getcwd(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows_dir = Path(out.uri) / "runs" / "killed" / "frames"
    deadline = time.time() + 240
    while time.time() < deadline and not list(rows_dir.rglob("*.parquet")):
        assert job.poll() is None, "the job ended before it could be killed"
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)  # the driver and its Ray workers, mid-run
    job.wait()
    return _settled_rows(out.open(), "killed")


@pytest.mark.slow
def test_a_killed_run_resumes_with_every_frame_done_once(tmp_path, ray_local):
    count = 40
    inp, out = StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out"))
    _write(inp.open(), _frames(count=count, cut=20, size=(64, 96)))
    store = out.open()
    before = killed_mid_run(inp, out)
    assert 0 < len(before) < count, "the kill did not land mid-run"

    resumed = _spec(inp.uri, out.uri, "resumed", "video.chunk_frames=2", "video.chunk_overlap=0")
    summary = run_film(resumed, FilmChunkActor)
    rows = _rows(store)
    done = sorted(r["frame"] for r in rows if r["status"] == "done")
    assert done == list(range(FIRST, FIRST + count))  # every frame exactly one done row
    assert summary["already_done"] == len(before) and summary["done"] == count - len(before)
    outputs = _outputs(store)
    assert outputs == _expected(FIRST, count)
    for key in outputs:  # every output is whole
        Image.open(io.BytesIO(store.get(key))).load()


def test_stored_exr_frames_are_read_through_the_configured_transfer(tmp_path):
    OpenEXR = pytest.importorskip("OpenEXR")
    linear = np.full((4, 6, 3), 0.2, np.float32)
    linear[0, 0] = 3.0  # a highlight over 1: clipped either way
    with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                      {"RGB": linear}) as f:
        f.write(str(tmp_path / "plate.0001.exr"))
    store = StorageSpec(uri=str(tmp_path)).open()
    as_is = read_stored_frame(store, "plate.0001.exr", "none").rgb
    encoded = read_stored_frame(store, "plate.0001.exr", "srgb").rgb
    assert float(as_is[0, 1, 1]) == pytest.approx(0.2, abs=1e-6) and float(as_is[0, 0, 0]) == 1.0
    assert float(encoded[0, 1, 1]) == pytest.approx(1.055 * 0.2 ** (1 / 2.4) - 0.055, abs=1e-4)  # sRGB of 0.2
