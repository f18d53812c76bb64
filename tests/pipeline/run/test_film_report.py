"""The per-shot report and page of a --ray run (pipeline/run/film_report.py, pipeline/ledger/film_page.py):
put together from the chunks' reports, the failed frame marked, the profile stacked in frame order, the
rerun's report covering the chunks it did not rerun from the earlier run, the page drawn in Chromium."""
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from actors.film import FilmChunkActor
from pipeline.run.film_report import FILLED, MARGIN, SHOT_START
from pipeline.run.film_run import run_film
from pipeline.storage import StorageSpec
from tests.chromium import CHROMIUM, Chromium
from tests.pipeline.run.test_film_run import CUT, FIRST, FRAMES, SIZE, _FailsOnMarkedFrame, _frames, _spec, _write

MARKED = 4  # frame 105: the last frame of the first shot, in its second chunk
MEASURED = ("video.temporal=flow", "video.measure_flow=true")  # lead-ins, and a warping error per frame pair


@pytest.fixture(scope="module")
def _runs_once():
    return {}


@pytest.fixture
def film_run(_runs_once, tmp_path_factory, ray_local):
    """A run whose model fails on frame 105, then a rerun (the model well) that redoes only its chunk; run once
    for the module (ray_local is per test, its Ray per session)."""
    if not _runs_once:
        root = tmp_path_factory.mktemp("film-report")
        inp, out = StorageSpec(str(root / "in")), StorageSpec(str(root / "out"))
        _write(inp.open(), _frames(marked=MARKED))
        first = run_film(_spec(inp.uri, out.uri, "run-1", *MEASURED), _FailsOnMarkedFrame)
        second = run_film(_spec(inp.uri, out.uri, "run-2", *MEASURED), FilmChunkActor)
        _runs_once["runs"] = root, out.open(), first, second
    return _runs_once["runs"]


def _shots(store, run_id):
    return json.loads(store.get(f"runs/{run_id}/shots/reel/r.png.json"))


def test_one_entry_per_shot_with_whole_curves_and_the_failed_frame_marked(film_run):
    _, store, first, _ = film_run
    assert first["failed"] == 1 and first["report"] == "runs/run-1/report.html"
    report = _shots(store, "run-1")
    assert report["cuts"] == [FIRST + CUT] and report["frames"] == FRAMES
    assert [(s["start"], s["end"], s["frames"]) for s in report["shots"]] == [(101, 106, 5), (106, 110, 4)]
    for shot in report["shots"]:
        n = shot["frames"]
        assert len(shot["flicker_curve"]) == len(shot["bicubic_flicker_curve"]) == n
        # flow's lead-in frame gives each chunk the pair into its first frame: no gap between chunks
        assert len(shot["warping_error"]) == len(shot["bicubic_warping_error"]) == n - 1
        assert all(isinstance(v, float) for v in shot["flicker_curve"] + shot["warping_error"])
        assert shot["warping_error_vs_bicubic"] > 0 and shot["unreported_frames"] == []
    (failed,) = report["shots"][0]["failed_frames"]
    assert failed == {"frame": FIRST + MARKED, "error": "RuntimeError: out of memory on the marked frame",
                      "filled_from": "bicubic"}
    assert report["shots"][1]["failed_frames"] == [] and report["frames_failed"] == 1


def _profile(store, run_id):
    return np.asarray(Image.open(io.BytesIO(store.get(f"runs/{run_id}/shots/reel/r.png.profile.png"))))


def test_the_temporal_profile_stacks_each_output_middle_row_in_frame_order(film_run):
    _, store, _, _ = film_run
    # run-2's: the outputs stored now (run-1 wrote frame 105 as its bicubic fill, run-2 the model's)
    profile = _profile(store, "run-2")
    height, width = 2 * SIZE[0], 2 * SIZE[1]
    assert profile.shape == (FRAMES, MARGIN + width, 3)
    for y in range(FRAMES):
        with Image.open(io.BytesIO(store.get(f"images/reel/r.{FIRST + y:04d}.png"))) as image:
            middle = np.asarray(image.convert("RGB"))[height // 2].astype(int)
        assert np.abs(profile[y, MARGIN:].astype(int) - middle).max() <= 1, y  # both rounded from the same floats
    margin = profile[:, 0].tolist()
    assert margin[0] == margin[CUT] == list(SHOT_START)  # shots start
    assert margin[MARKED] == margin[1] == [0, 0, 0]
    assert _profile(store, "run-1")[MARKED, 0].tolist() == list(FILLED)  # the frame run-1 filled from bicubic


def test_the_rerun_report_takes_the_chunks_it_did_not_rerun_from_the_earlier_run(film_run):
    _, store, _, second = film_run
    assert second["chunks"] == 1 and second["done"] == 1
    report = _shots(store, "run-2")
    assert report["frames_failed"] == 0 and report["frames_unreported"] == 0
    assert report["shots"][0]["from_runs"] == ["run-1", "run-2"] and report["shots"][1]["from_runs"] == ["run-1"]
    assert report["shots"][1]["flicker_curve"] == _shots(store, "run-1")["shots"][1]["flicker_curve"]


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root")
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def test_the_page_renders_in_chromium_without_errors_or_requests(film_run, chromium, tmp_path):
    root, store, _, _ = film_run
    page = root / "out" / "runs" / "run-1" / "report.html"
    html = page.read_text()
    assert "RuntimeError: out of memory on the marked frame" in html and "USD per minute of footage" in html
    problems, external = chromium.load(page.as_uri())
    assert problems == [] and external == []
    shot = tmp_path / "film-report.png"
    chromium.screenshot(shot)
    image = Image.open(shot)
    assert image.width >= 900 and image.height > 900
    assert len(np.unique(np.asarray(image.convert("L")))) > 50  # the chart and the profile drew
    if os.environ.get("OP4KSR_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["OP4KSR_SCREENSHOT_DIR"]) / "film-report.png")
