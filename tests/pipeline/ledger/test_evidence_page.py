"""The evidence on the run page and the comparison page: a flagged output's heatmap beside its worst-cell crop,
its changed words and the counts, rendered by Chromium; older runs without the fields still read."""
import base64
import dataclasses
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from jobs import cli
from op4ksr.quality.evidence import EvidenceOptions, evidence, manifest_fields
from op4ksr.quality.heatmap import heatmap_png
from pipeline.ledger.comparison import VariantRun, variant_table, image_rows
from pipeline.ledger.comparison_page import evidence_sections, render_comparison
from pipeline.ledger.cost import build_ledger
from pipeline.ledger.page import write_report
from pipeline.manifest.layout import heatmap_key, report_key
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record
from pipeline.run.backfill import RunSummary
from pipeline.storage import open_storage
from tests import planted
from tests.chromium import CHROMIUM, Chromium
from tests.ledger_frames import cost_summary, default_prices

T0 = 1_780_000_000.0
PLANT = (96, 160, 32, 32)


def _png(x) -> bytes:
    out = io.BytesIO()
    Image.fromarray((x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def _outputs(tmp_path: Path, name: str = "out"):
    """(inputs, outputs, manifest rows): a faithful output and a patched one, checked as the actor checks them."""
    inputs, outputs = open_storage(str(tmp_path / "in")), open_storage(str(tmp_path / name))
    lr = planted.downscale(planted.photo("chelsea", (0, 0, 296, 448)))
    faithful = planted.back_projected(lr)
    rows = []
    for key, out in (("faithful.png", faithful), ("patched <1>.png", planted.patch_replaced(faithful, PLANT, (200, 300)))):
        inputs.put(key, _png(lr))
        outputs.put(f"images/{key}", _png(out))
        found, = evidence(out, lr, options=EvidenceOptions(text_check="off"))
        fields = manifest_fields(found.fields)
        fields.pop("face_boxes")
        if found.flagged:
            fields["heatmap_key"] = heatmap_key(key)
            outputs.put(fields["heatmap_key"], heatmap_png(out[0], found.contradiction))
        record = new_record(key, "r1", status="ok", output_key=f"images/{key}", input_size="112x74",
                            output_size="448x296", ap_excess=0.0, flagged=False, gpu_seconds=0.5, cpu_seconds=0.1,
                            started_at=T0, actor_id="n:1", actor_started_at=T0 - 5, actor_load_seconds=2.0,
                            actor_warmup_seconds=1.0, requests_get=2, requests_put=2, model_id="m", **fields)
        outputs.put(report_key(key), json.dumps(record).encode())
        rows.append(record)
    return inputs, outputs, rows


def _variant(root: Path, rows: list[dict]) -> None:
    """The variant's run folder as its backfill leaves it: the manifest the comparison reads failures from."""
    (root / "runs" / "r1" / "manifest").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), root / "runs" / "r1" / "manifest" / "part-0.parquet")


def _page(tmp_path: Path, rows: list[dict], inputs, outputs, schema=MANIFEST_SCHEMA) -> str:
    manifest = pa.Table.from_pylist(rows, schema=schema).to_pandas()
    ledger = build_ledger(manifest, default_prices(), run_ended_at=T0 + 5)
    summary = RunSummary("r1", len(rows), len(rows), 0, 0, 1.0, "m", "s", flagged=0,
                         cost=cost_summary(ledger, default_prices()))
    run = open_storage(str(tmp_path / "out" / "runs" / "r1"))
    write_report(run, dataclasses.asdict(summary), manifest, ledger, default_prices(), 0.04, inputs, outputs)
    return (tmp_path / "out" / "runs" / "r1" / "report.html").read_text()


def test_the_run_page_shows_the_flagged_heatmap_beside_its_worst_cell(tmp_path):
    inputs, outputs, rows = _outputs(tmp_path)
    page = _page(tmp_path, rows, inputs, outputs)
    assert "Evidence: is it the same picture? (1)" in page and "1 of 2 images flagged" in page
    assert 'alt="contradiction heatmap of patched &lt;1&gt;.png"' in page and "faithful.png</b>" not in page
    size, left, top = rows[1]["worst_cell"].split("+")  # "WxH+left+top" of the plant's cell
    (width, height), left, top = map(int, size.split("x")), int(left), int(top)
    assert planted.within_one_cell({"top": top, "left": left, "height": height, "width": width}, PLANT)
    assert f"output at {rows[1]['worst_cell']}, 100%" in " ".join(page.split())
    crop = page.split('alt="output crop at the worst cell of')[1].split('src="data:image/png;base64,')[1].split('"')[0]
    image = Image.open(io.BytesIO(base64.b64decode(crop)))
    right, bottom = min(448, left + 2 * width), min(296, top + 2 * height)  # one cell around it, clipped
    assert image.size == (right - max(0, left - width), bottom - max(0, top - height))


def test_a_run_without_evidence_fields_still_reports_and_costs(tmp_path, capsys):
    inputs, outputs, rows = _outputs(tmp_path)
    new = {"contradicted_fraction", "worst_cell", "worst_cell_score", "added_detail", "faces", "face_contradiction",
           "text_cer", "text_words", "changed_words", "evidence_flagged", "evidence_notes", "heatmap_key"}
    old_schema = pa.schema([f for f in MANIFEST_SCHEMA if f.name not in new])
    old_rows = [{k: v for k, v in r.items() if k not in new} for r in rows]
    page = _page(tmp_path, old_rows, inputs, outputs, old_schema)
    assert "This run has no evidence fields (written before they existed)." in page
    run = tmp_path / "out" / "runs" / "r1"
    (run / "manifest").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(old_rows, schema=old_schema), run / "manifest" / "part-00000.parquet")
    assert cli.main(["report", str(run)]) == 0 and cli.main(["cost", str(run)]) == 0
    assert "no evidence fields" in (run / "report.html").read_text()


def test_the_comparison_gains_the_evidence_per_variant(tmp_path):
    inputs, faithful_out, faithful_rows = _outputs(tmp_path, "variants/a")
    _variant(tmp_path / "variants" / "a", faithful_rows)
    runs = [VariantRun("a", faithful_out, "r1")]
    images = image_rows(runs[0], ["faithful.png", "patched <1>.png"])
    table = variant_table(images, ["a"])
    assert table.loc[0, "evidence_flagged"] == 1 and table.loc[0, "contradicted_fraction"] > 0
    assert {"contradicted_fraction", "added_detail"} <= set(table.columns)
    html = render_comparison(table, images, [], input_uri="in/", output_uri="out/", sample_size=2, threshold=0.04,
                             evidence=evidence_sections(images, runs))
    assert "<h3>a</h3>" in html and "1 of 2 images flagged" in html and "contradiction heatmap of patched" in html
    assert "contradicted_fraction" in html and "added_detail" in html
    per_image = html.split("<h2>Per image</h2>")[1]
    assert "<th>evidence_flagged</th>" in per_image and "<th>contradicted_fraction</th>" in per_image


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="`make test` installs Debian's chromium when run as root")
def test_both_pages_render_in_chromium(tmp_path):
    inputs, outputs, rows = _outputs(tmp_path)
    _page(tmp_path, rows, inputs, outputs)
    runs = [VariantRun("a", outputs, "r1")]
    (tmp_path / "out" / "runs" / "r1" / "manifest").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA), tmp_path / "out" / "runs" / "r1" / "manifest" / "p.parquet")
    images = image_rows(runs[0], ["faithful.png", "patched <1>.png"])
    comparison = tmp_path / "comparison.html"
    comparison.write_text(render_comparison(variant_table(images, ["a"]), images, [], input_uri="in/",
                                            output_uri="out/", sample_size=2, threshold=0.04,
                                            evidence=evidence_sections(images, runs)))
    browser = Chromium(tmp_path / "profile")
    try:
        for page in (tmp_path / "out" / "runs" / "r1" / "report.html", comparison):
            problems, external = browser.load(page.as_uri())
            assert problems == [] and external == []
            shot = tmp_path / f"{page.stem}.png"
            browser.screenshot(shot)
            pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
            red = (pixels[..., 0] > 200) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
            assert red.sum() > 100  # the heatmap's red cell drew
            if os.environ.get("OP4KSR_SCREENSHOT_DIR"):
                shutil.copy(shot, Path(os.environ["OP4KSR_SCREENSHOT_DIR"]) / f"evidence-{page.stem}.png")
    finally:
        browser.close()
