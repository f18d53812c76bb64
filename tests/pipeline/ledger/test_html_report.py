"""report.html: self-contained, and rendered by a real headless Chromium without console errors.

Chromium is driven over the DevTools protocol (tests/chromium.py): exceptions, console errors,
log errors and every network request the page makes are collected, then a screenshot is taken.
"""
import base64
import dataclasses
import html.parser
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from pipeline.run.backfill import RunSummary
from pipeline.ledger.cost import build_ledger
from tests.ledger_frames import cost_summary, default_prices
from pipeline.ledger.page import CONTACT_SHEET_IMAGES, write_report
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record
from pipeline.storage import open_storage
from tests.chromium import CHROMIUM, Chromium

T0 = 1_780_000_000.0


def _png(array) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG")
    return out.getvalue()


def _run(tmp_path, count=14):
    """A finished run on local storage: inputs, outputs, and the manifest rows that describe them."""
    inputs, outputs = open_storage(str(tmp_path / "in")), open_storage(str(tmp_path / "out"))
    rng = np.random.default_rng(0)
    rows = []
    for i in range(count):
        key = f"set{i % 2}/img <{i}>.png"  # a key that needs escaping in HTML
        h, w = 40 + 8 * (i % 3), 64 - 8 * (i % 3)
        inputs.put(key, _png(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
        outputs.put(f"images/{key}", _png(rng.integers(0, 255, (4 * h, 4 * w, 3), dtype=np.uint8)))
        excess = 0.02 * i
        rows.append(new_record(key, "r1", status="ok", output_key=f"images/{key}", input_size=f"{w}x{h}",
                               output_size=f"{4 * w}x{4 * h}", ap_excess=excess, ap_score_out=excess + 0.01,
                               ap_score_in=0.01, dominant_period_px=32.0, lr_consistency_psnr=30.0,
                               flagged=excess > 0.1, gpu_seconds=0.5, cpu_seconds=0.1, started_at=T0 + i,
                               actor_id="n:1", actor_started_at=T0 - 5, actor_load_seconds=2.0,
                               actor_warmup_seconds=1.0, requests_get=2, requests_put=2))
    rows.append(new_record("bad.jpg", "r1", status="failed", error_class="ImageDecodeError",
                           error="cannot identify image <html>", started_at=T0))
    manifest = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA).to_pandas()
    ledger = build_ledger(manifest, default_prices(), run_ended_at=T0 + count + 5)
    summary = RunSummary("r1", count + 1, count, 1, 0, 12.5, "file:///x/runs/r1/manifest/", "file:///x/summary.json",
                         flagged=int(manifest["flagged"].sum()), cost=cost_summary(ledger, default_prices()))
    run = open_storage(str(tmp_path / "out" / "runs" / "r1"))
    write_report(run, dataclasses.asdict(summary), manifest, ledger, default_prices(), 0.1, inputs, outputs)
    return tmp_path / "out" / "runs" / "r1" / "report.html"


def test_a_run_with_nothing_processed_still_gets_a_page(tmp_path):
    """A dry run or an empty catalog: an empty manifest, an empty ledger, a page that says so."""
    manifest = MANIFEST_SCHEMA.empty_table().to_pandas()
    ledger = build_ledger(manifest, default_prices(), run_ended_at=T0)
    summary = RunSummary("dry", 0, 0, 0, 0, 0.1, "m", "s", dry_run=True, cost=cost_summary(ledger, default_prices()))
    run, store = open_storage(str(tmp_path / "run")), open_storage(str(tmp_path / "io"))
    write_report(run, dataclasses.asdict(summary), manifest, ledger, default_prices(), 0.1, store, store)
    page = (tmp_path / "run" / "report.html").read_text()
    assert "No processed images." in page and "No images to show." in page


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls, self.tags = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]


def test_report_is_one_self_contained_page(tmp_path):
    page = _run(tmp_path).read_text()
    links = _Links()
    links.feed(page)
    assert links.urls and all(url.startswith("data:image/png;base64,") for url in links.urls)
    assert "script" not in links.tags and "link" not in links.tags
    assert links.tags.count("figure") == CONTACT_SHEET_IMAGES
    assert "set1/img &lt;13&gt;.png" in page and "<13>" not in page  # keys are escaped
    assert "Flagged images (8)" in page and "Failed images (1)" in page and "cannot identify image &lt;html&gt;" in page
    def image(url):
        return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))

    # the chart, the histogram, then per contact-sheet image: input, bicubic and output crops of one region
    small, bicubic, output = (image(u) for u in links.urls[2:5])
    assert bicubic.size == output.size and bicubic.width > small.width
    assert "input · bicubic · output" in page and "LR-consistency" in page


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs Debian's chromium when run as root")
    browser = Chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield browser
    browser.close()


def test_report_renders_in_chromium_without_errors_or_requests(tmp_path, chromium):
    page = _run(tmp_path)
    problems, external = chromium.load(page.as_uri())
    assert problems == [] and external == []
    shot = tmp_path / "report.png"
    chromium.screenshot(shot)
    image = Image.open(shot)
    assert image.width >= 900 and image.height > 2000  # the whole page, not one viewport
    assert len(np.unique(np.asarray(image.convert("L")))) > 50  # charts and crops drew, not a blank page
    if os.environ.get("OP4KSR_SCREENSHOT_DIR"):
        shutil.copy(shot, Path(os.environ["OP4KSR_SCREENSHOT_DIR"]) / "report.png")


def test_the_browser_check_catches_script_errors_and_external_assets(tmp_path, chromium):
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>bad</p><img src="http://127.0.0.1:9/x.png">'
                   '<script>console.error("boom-console"); throw new Error("boom-exception");</script></body></html>')
    problems, external = chromium.load(bad.as_uri())
    assert any("boom-console" in p for p in problems)
    assert any("boom-exception" in p for p in problems)
    assert external == ["http://127.0.0.1:9/x.png"]


def test_the_bicubic_crop_is_the_crop_of_a_whole_image_bicubic_upscale():
    from pipeline.ledger.page import _bicubic_crop

    rng = np.random.default_rng(1)
    source = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    box = (100, 60, 292, 252)  # a 4x output's crop of the input region (25, 15)-(73, 63)
    whole = np.asarray(source.resize((320, 240), Image.BICUBIC).crop(box), dtype=float)
    part = np.asarray(_bicubic_crop(source, (320, 240), box), dtype=float)
    assert part.shape == whole.shape and np.abs(part - whole).max() <= 2  # rounding only
