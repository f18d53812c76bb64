"""The streamed finish phase and `op4ksr report` on synthetic multi-part manifests (local folders, no Ray)."""
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.run.backfill import ManifestWriter
from pipeline.ledger.cost import Prices, build_ledger
from pipeline.ledger.finish import FinishRecord, finish_run
from pipeline.ledger.page import ReportDigest
from pipeline.ledger.totals import LedgerTotals
from pipeline.ledger.manifest_scan import scan_manifest
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record
from pipeline.storage import open_storage
from tests.ledger_frames import cost_summary, default_prices, group_costs, ledger_table, read_manifest

T0 = 1_780_000_000.0
PRICES = Prices(gpu_hour_usd=3.6, cpu_hour_usd=0.36, put_per_1k=5.0, get_per_1k=0.4, egress_per_gb=10.0)
PART_ROWS = (700, 1300, 450)  # parts of different sizes, each split into several scan batches


def _records(count, seed=0):
    """Rows like a run's: three actors (one only skipping), ok / failed / skipped, a few flagged."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        status = "ok" if i % 10 < 8 else ("failed" if i % 10 == 8 else "skipped")
        actor = "node:3" if status == "skipped" else f"node:{i % 2}"
        record = new_record(f"p{i % 7}/img-{i:05d}.png", "r1", status=status, actor_id=actor, device="cuda:0",
                            input_etag=f"{i:032x}", model_id="m", params_hash="h", started_at=T0 + i / 10,
                            t_fetch=0.01, cpu_fetch_seconds=0.005, cpu_seconds=0.02, requests_get=1 + (status != "skipped"),
                            bytes_in=0 if status == "skipped" else 50_000, actor_started_at=T0 - 30 - (i % 2),
                            actor_load_seconds=4.0, actor_warmup_seconds=1.0 + (i % 2))
        if status == "ok":
            forward, excess = float(rng.uniform(0.01, 0.05)), float(rng.gamma(1.0, 0.02))
            record.update(gpu_seconds=forward, t_model=forward, model_started_at=T0 + i / 10 + 0.1,
                          encode_started_at=T0 + i / 10 + 1.2, t_encode=0.1, t_upload=0.05, cpu_encode_seconds=0.1,
                          cpu_upload_seconds=0.01, cpu_seconds=0.13, requests_put=2, bytes_out=400_000,
                          ap_excess=excess, ap_score_out=excess + 0.01, ap_score_in=0.01, flagged=excess > 0.04,
                          output_key=f"images/p{i % 7}/img-{i:05d}.png", dominant_period_px=32.0,
                          niqe=None if i % 10 == 7 else float(rng.uniform(2, 8)))  # some too small to score
        elif status == "failed":
            record.update(error_class="ImageDecodeError", error=f"cannot identify image {i}")
        rows.append(record)
    return rows


def _write_run(tmp_path, part_rows=PART_ROWS):
    folder = tmp_path / "out" / "runs" / "r1" / "manifest"
    folder.mkdir(parents=True)
    records, start = _records(sum(part_rows)), 0
    for part, n in enumerate(part_rows):
        table = pa.Table.from_pylist(records[start:start + n], schema=MANIFEST_SCHEMA)
        pq.write_table(table, folder / f"part-{part:05d}.parquet", row_group_size=200)
        start += n
    return open_storage(str(folder.parent))


def test_streamed_finish_equals_the_whole_dataframe_path(tmp_path):
    run = _write_run(tmp_path)
    store = open_storage(str(tmp_path / "io"))
    ended = T0 + sum(PART_ROWS) / 10 + 30
    record = FinishRecord("r1", ended, 42.0, listed=sum(PART_ROWS))
    batches = list(scan_manifest(run, batch_rows=256))
    assert len(batches) >= 10 and max(len(b) for b in batches) <= 256  # the bounded path: many small batches

    summary = finish_run(run, record, PRICES, 0.04, store, store, batch_rows=256)

    manifest = read_manifest(run)  # the reference: everything in one DataFrame, as before
    ledger = build_ledger(manifest, PRICES, run_ended_at=ended)
    streamed = pq.read_table(tmp_path / "out" / "runs" / "r1" / "cost.parquet")
    assert json.loads(streamed.schema.metadata[b"op4ksr.prices"])["gpu_hour_usd"] == 3.6
    pd.testing.assert_frame_equal(streamed.to_pandas(), ledger_table(ledger, PRICES).to_pandas(),
                                  check_exact=False, rtol=1e-12)
    expected = cost_summary(ledger, PRICES)
    for name, value in expected.items():
        if isinstance(value, float):
            assert summary["cost"][name] == pytest.approx(value, rel=1e-9), name
    ok = manifest["status"] == "ok"
    assert (summary["total"], summary["ok"], summary["failed"], summary["skipped"]) == (
        2450, int(ok.sum()), int((manifest["status"] == "failed").sum()), int((manifest["status"] == "skipped").sum()))
    assert summary["flagged"] == int(manifest["flagged"].fillna(False).astype(bool).sum())
    assert summary["gpu_seconds"] == pytest.approx(manifest["gpu_seconds"].sum())
    assert summary["mean_niqe"] == pytest.approx(manifest["niqe"].dropna().mean()) and manifest["niqe"].isna().any()
    assert summary["seconds"] == 42.0 and json.loads(run.get("summary.json")) == summary
    # the device seconds still add up to the actors' lifetimes, across parts and batches
    lifetimes = ended - manifest.groupby("actor_id")["actor_started_at"].min()
    assert streamed.column("device_seconds").to_numpy().sum() == pytest.approx(lifetimes.sum())

    totals = LedgerTotals.of(ledger)
    pd.testing.assert_frame_equal(totals.groups("prefix"), group_costs(ledger, "prefix"))
    page = run.get("report.html").decode()
    flagged = manifest[manifest["flagged"].fillna(False).astype(bool)].sort_values("ap_excess", ascending=False)
    assert f"Flagged images ({len(flagged)})" in page and flagged["key"].iloc[0] in page
    assert "Failed images (245)" in page and "cannot identify image 8" in page
    assert f"<td>{summary['mean_niqe']:.3f}</td>" in page


def test_digest_fed_in_batches_equals_the_digest_of_the_whole_manifest(tmp_path):
    manifest = read_manifest(_write_run(tmp_path))
    whole = ReportDigest.of(manifest)
    values = manifest["ap_excess"].dropna()
    batched = ReportDigest((values.min(), values.max(), len(values)))
    for start in range(0, len(manifest), 100):
        batched.add(manifest.iloc[start:start + 100])
    assert (batched.flagged_count, batched.failed_count) == (whole.flagged_count, whole.failed_count)
    assert list(batched.flagged["key"]) == list(whole.flagged["key"])
    assert list(batched.failed["key"]) == list(manifest.loc[manifest["status"] == "failed", "key"].head(50))
    assert list(batched.candidates["key"]) == list(whole.candidates["key"])
    np.testing.assert_array_equal(batched.counts, np.histogram(values, bins=len(batched.counts))[0])


def test_manifest_parts_grow_and_keep_every_row_in_order(tmp_path):
    out = open_storage(str(tmp_path))
    writer = ManifestWriter(out, "r1", first_rows=10, max_rows=40)
    rows = _records(157)
    for start in range(0, 157, 13):  # blocks of any size, as Ray Data hands them over
        writer.add(rows[start:start + 13])
    writer.close()
    parts = sorted((tmp_path / "runs" / "r1" / "manifest").iterdir())
    assert [pq.read_metadata(p).num_rows for p in parts] == [10, 20, 40, 40, 40, 7]
    assert [r["key"] for r in read_manifest(open_storage(str(tmp_path / "runs" / "r1"))).to_dict("records")] == \
        [r["key"] for r in rows]


def test_a_part_is_uploaded_once_it_is_old_enough_even_if_not_full(tmp_path):
    writer = ManifestWriter(open_storage(str(tmp_path)), "r1", first_rows=1000, part_seconds=0.0)
    rows = _records(12)
    writer.add(rows[:5])  # the part opened now is already past its age: uploaded with what it has
    writer.add(rows[5:])
    writer.close()
    parts = sorted((tmp_path / "runs" / "r1" / "manifest").iterdir())
    assert [pq.read_metadata(p).num_rows for p in parts] == [5, 7]


def test_report_command_rebuilds_a_run_and_reprices_it(tmp_path, capsys):
    from jobs.cli import main

    run = _write_run(tmp_path)
    FinishRecord("r1", T0 + 300, 12.0, listed=sum(PART_ROWS)).save(run)
    folder = tmp_path / "out" / "runs" / "r1"
    assert main(["report", str(folder)]) == 0
    first = json.loads((folder / "summary.json").read_text())
    assert "report:" in capsys.readouterr().out and (folder / "report.html").is_file()
    assert first["cost"]["prices"] == {**vars(default_prices())}  # no config.yaml in the folder: the default prices
    assert main(["report", str(folder), "--reprice", "cost.gpu_hour_usd=25"]) == 0
    again = json.loads((folder / "summary.json").read_text())
    assert again["cost"]["device_usd"] == pytest.approx(first["cost"]["device_usd"] * 10)
    assert again["cost"]["cpu_usd"] == pytest.approx(first["cost"]["cpu_usd"])
    (tmp_path / "elsewhere").mkdir()
    assert main(["report", str(tmp_path / "elsewhere")]) == 2
    assert "no manifest parts; is this a run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_report_rebuild_of_a_real_run_equals_what_its_finish_phase_wrote(s3_server, s3_bucket, ray_local):
    """A run on moto S3 + local Ray; its finish outputs deleted (a crash there); `op4ksr report` writes them again."""
    import io
    import re

    from jobs.config import load_config, to_yaml
    from actors.upscaler import UpscaleActor
    from pipeline.run.backfill import run_backfill
    from jobs.report import rebuild
    from jobs.specs import build_run_spec

    inputs = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    rng = np.random.default_rng(0)
    for i in range(4):
        from PIL import Image

        image = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (24 + 8 * i, 32, 3), dtype=np.uint8)).save(image, "PNG")
        inputs.put(f"p{i % 2}/img-{i}.png", image.getvalue())
    inputs.put("broken.jpg", b"not an image")
    cfg = load_config([], [f"input.uri=s3://{s3_bucket}/in/", f"output.uri=s3://{s3_bucket}/out/",
                           f"storage.endpoint_url={s3_server.endpoint_url}"])
    run_backfill(build_run_spec(cfg, "run-1", to_yaml(cfg), credentials=s3_server.credentials),  # as jobs save it
                 UpscaleActor)
    run = s3_server.open_storage(f"s3://{s3_bucket}/out/runs/run-1/")
    written = {name: run.get(name) for name in ("cost.parquet", "summary.json", "report.html")}
    for name in written:
        run.delete(name)

    summary = rebuild(s3_server.open_storage, f"s3://{s3_bucket}/out/runs/run-1/")

    assert summary == json.loads(written["summary.json"]) == json.loads(run.get("summary.json"))
    assert (summary["ok"], summary["failed"]) == (4, 1)
    original, rebuilt = (pq.read_table(io.BytesIO(data)) for data in (written["cost.parquet"], run.get("cost.parquet")))
    assert rebuilt.equals(original, check_metadata=True)

    def page(data):  # the page says when it was generated; nothing else may differ
        return re.sub(r"Generated [^<]* from", "Generated - from", data.decode())

    assert page(run.get("report.html")) == page(written["report.html"])
    assert page(written["report.html"]).count('alt="output crop"') == 4  # the contact sheet found the images
