"""The cost ledger on synthetic manifests: actor overhead shares, prices, Parquet, `op4ksr cost`."""
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from pipeline.ledger.catalog_cost import catalog_runs, cost_report
from jobs.specs import prices_from_config
from pipeline.ledger.cost import LEDGER_SCHEMA, Prices, build_ledger
from tests.ledger_frames import (cost_summary, default_prices, group_costs, read_ledger, stage_breakdown,
                                 write_ledger)
from pipeline.manifest.records import MANIFEST_SCHEMA, new_record
from pipeline.storage import open_storage

T0 = 1_780_000_000.0  # 2026-05-28 UTC
PRICES = Prices(gpu_hour_usd=3.6, cpu_hour_usd=0.36, put_per_1k=5.0, get_per_1k=0.4, egress_per_gb=10.0)


def _row(key, run_id="r1", status="ok", actor="node:1", forward=1.0, start=T0, **values):
    record = new_record(key, run_id, status=status, actor_id=actor, device="cuda:0", started_at=start,
                        t_fetch=0.1, t_decode=0.1, cpu_fetch_seconds=0.05, cpu_decode_seconds=0.05,
                        cpu_seconds=0.1, requests_get=2, bytes_in=1_000_000, actor_started_at=T0 - 100,
                        actor_load_seconds=6.0, actor_warmup_seconds=2.0)
    if status == "ok":
        record.update(gpu_seconds=forward, t_model=forward, model_started_at=start + 1, encode_started_at=start + 2,
                      t_encode=0.2, t_upload=0.1, cpu_encode_seconds=0.2, cpu_upload_seconds=0.1, cpu_seconds=0.4,
                      requests_put=2, bytes_out=4_000_000)
    record.update(values)
    return record


def _manifest() -> pd.DataFrame:
    """Actor node:1 ran 3 forwards (1 s, 1 s, 2 s) and saw one failed row; node:2 only skipped 2 rows."""
    rows = [_row("photos/a.png"), _row("photos/b.png"), _row("scans/c.png", forward=2.0),
            _row("broken.jpg", status="failed", error_class="ImageDecodeError"),
            _row("scans/d.png", status="skipped", actor="node:2", requests_get=1, bytes_in=0),
            _row("scans/e.png", status="skipped", actor="node:2", requests_get=1, bytes_in=0)]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA).to_pandas()


def test_actor_overhead_and_idle_are_shared_so_device_seconds_add_up_to_actor_lifetimes():
    ledger = build_ledger(_manifest(), PRICES, run_ended_at=T0)  # both actors lived 100 s
    by_key = ledger.set_index("key")
    # node:1: 100 s = 8 s load + warm-up + 4 s forward + 88 s idle, shared over its 3 forwards
    assert by_key.loc["photos/a.png", "device_warmup_seconds"] == pytest.approx(8 / 3)
    assert by_key.loc["photos/a.png", "device_idle_seconds"] == pytest.approx(88 / 3)
    assert by_key.loc["scans/c.png", "device_seconds"] == pytest.approx(2 + 8 / 3 + 88 / 3)
    assert by_key.loc["broken.jpg", "device_seconds"] == 0  # no forward, no share
    # node:2 ran no forward: its whole lifetime is shared by the rows it saw (a rerun still loads the model)
    assert by_key.loc["scans/d.png", "device_warmup_seconds"] == pytest.approx(4.0)
    assert by_key.loc["scans/d.png", "device_idle_seconds"] == pytest.approx(46.0)
    assert ledger["device_seconds"].sum() == pytest.approx(200.0)
    assert cost_summary(ledger, PRICES)["utilisation"] == pytest.approx(4 / 200)


def test_prices_turn_seconds_requests_and_bytes_into_usd():
    ledger = build_ledger(_manifest(), PRICES, run_ended_at=T0).set_index("key")
    a = ledger.loc["photos/a.png"]
    assert a["device_usd"] == pytest.approx(a["device_seconds"] * 0.001)  # 3.6 USD/h
    assert a["cpu_usd"] == pytest.approx(0.4 * 0.0001)
    assert (a["get_usd"], a["put_usd"]) == (pytest.approx(0.0008), pytest.approx(0.01))
    assert a["egress_usd"] == pytest.approx(0.01)  # 1 MB at 10 USD/GB
    assert a["total_usd"] == pytest.approx(a[["device_usd", "cpu_usd", "get_usd", "put_usd", "egress_usd"]].sum())
    assert (a["prefix"], a["month"]) == ("photos/", "2026-05")
    assert ledger.loc["broken.jpg", "prefix"] == ""


def test_stage_breakdown_adds_up_to_the_total_and_splits_cpu_by_stage():
    ledger = build_ledger(_manifest(), PRICES, run_ended_at=T0)
    stages = stage_breakdown(ledger).set_index("stage")
    assert stages["usd"].sum() == pytest.approx(ledger["total_usd"].sum())
    assert stages.loc["device forward", "amount"] == pytest.approx(4.0)
    assert stages.loc["CPU encode", "amount"] == pytest.approx(0.6)
    assert stages.loc["CPU other", "amount"] == pytest.approx(0.0)
    summary = cost_summary(ledger, PRICES)
    ok = ledger[ledger["status"] == "ok"]["total_usd"]
    assert summary["per_image_p50_usd"] == pytest.approx(ok.median())
    assert summary["per_delivered_image_usd"] == pytest.approx(ledger["total_usd"].sum() / 3)
    json.dumps(summary)  # goes into summary.json as it is


def test_without_run_end_an_actor_ends_with_its_last_stage_and_old_manifests_still_price():
    ledger = build_ledger(_manifest(), PRICES)
    node1 = ledger[ledger["actor_id"] == "node:1"]
    assert node1["device_seconds"].sum() == pytest.approx(100 + 3.0)  # c.png: its 2 s forward from T0 + 1 ends last
    old = _manifest()[["key", "run_id", "status", "gpu_seconds", "cpu_seconds", "requests_get", "bytes_in"]]
    ledger = build_ledger(old, PRICES)
    assert ledger["device_seconds"].sum() == pytest.approx(4.0)  # forwards only: no actor timings recorded
    assert ledger["cpu_other_seconds"].sum() == pytest.approx(ledger["cpu_seconds"].sum())
    assert (ledger["month"] == "unknown").all()


def test_grouping_by_prefix_and_month():
    ledger = build_ledger(_manifest(), PRICES, run_ended_at=T0)
    by_prefix = group_costs(ledger, "prefix").set_index("prefix")
    assert list(by_prefix.index) == ["", "photos/", "scans/"]
    assert by_prefix.loc["scans/", "images"] == 3 and by_prefix.loc["scans/", "ok"] == 1
    assert by_prefix["total_usd"].sum() == pytest.approx(ledger["total_usd"].sum())
    assert list(group_costs(ledger, "month")["month"]) == ["2026-05"]
    with pytest.raises(ValueError, match="month or prefix"):
        group_costs(ledger, "colour")


def test_presets_and_config_defaults():
    defaults = default_prices()  # configs/default.yaml's cost.*, the one home of the default prices
    assert (defaults.gpu_hour_usd, defaults.preset) == (load_config().cost.gpu_hour_usd, "")
    on_prem = prices_from_config(load_config([], ["cost.preset=h100-on-prem"]))
    assert on_prem.preset == "h100-on-prem" and on_prem.gpu_hour_usd < defaults.gpu_hour_usd
    own = prices_from_config(load_config([], ["cost.presets.mine.gpu_hour_usd=9", "cost.preset=mine"]))
    assert (own.gpu_hour_usd, own.cpu_hour_usd) == (9.0, defaults.cpu_hour_usd)
    with pytest.raises(ValueError, match="cost.preset='nope'"):
        prices_from_config(load_config([], ["cost.preset=nope"]))


def _write_run(storage, run_id, manifest: pd.DataFrame, listed: list[str], with_ledger: bool, opener=open_storage):
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(manifest.assign(run_id=run_id), schema=MANIFEST_SCHEMA, preserve_index=False),
                   sink)
    storage.put(f"runs/{run_id}/manifest/part-00000.parquet", sink.getvalue())
    sink = io.BytesIO()
    pq.write_table(pa.table({"key": listed}), sink)
    storage.put(f"runs/{run_id}/inputs.parquet", sink.getvalue())
    if with_ledger:
        run = opener(storage.spec.uri.rstrip("/") + f"/runs/{run_id}/")
        write_ledger(run, build_ledger(manifest.assign(run_id=run_id), PRICES, run_ended_at=T0), PRICES)


def test_ledger_parquet_round_trip_keeps_schema_and_prices(tmp_path):
    run = open_storage(str(tmp_path / "runs" / "r1"))
    ledger = build_ledger(_manifest(), PRICES, run_ended_at=T0)
    write_ledger(run, ledger, PRICES)
    table = pq.read_table(tmp_path / "runs" / "r1" / "cost.parquet")
    assert table.schema.remove_metadata() == LEDGER_SCHEMA
    again, prices = read_ledger(run)
    assert prices == PRICES and again["total_usd"].sum() == pytest.approx(ledger["total_usd"].sum())
    cheap, _ = read_ledger(run, Prices(gpu_hour_usd=0, cpu_hour_usd=0, put_per_1k=0, get_per_1k=0, egress_per_gb=10))
    assert cheap["total_usd"].sum() == pytest.approx(ledger["egress_usd"].sum())


def test_a_cost_parquet_from_before_the_later_columns_still_sums_and_reprices(tmp_path):
    out = open_storage(str(tmp_path / "out"))
    _write_run(out, "20260501T000000Z", _manifest(), ["photos/a.png"], True)
    run = open_storage(str(tmp_path / "out" / "runs" / "20260501T000000Z"))
    new = pq.read_table(io.BytesIO(run.get("cost.parquet")))
    old = new.drop_columns(["device_lost_seconds", "cpu_quality_seconds"])  # as a run before issues 21 and 23 wrote it
    sink = io.BytesIO()
    pq.write_table(old, sink)
    run.put("cost.parquet", sink.getvalue())
    runs = catalog_runs(open_storage, str(tmp_path / "out"))
    for prices in (None, PRICES):
        report = cost_report(runs, "run_id", prices=prices, rebuild_prices=default_prices())
        assert report.totals.images == 6
        assert report.summary["total_usd"] == pytest.approx(sum(new.column("total_usd").to_pylist()))


def test_catalog_report_over_s3_projects_what_remains(s3_server, s3_bucket):
    out = s3_server.open_storage(f"s3://{s3_bucket}/out/")
    manifest = _manifest()
    first, second = manifest.iloc[:4], manifest.iloc[4:]
    _write_run(out, "20260501T000000Z", first, ["photos/a.png", "photos/b.png", "scans/c.png", "broken.jpg"], True,
               s3_server.open_storage)
    _write_run(out, "20260601T000000Z", second, ["scans/d.png", "scans/e.png", "scans/f.png", "scans/g.png"], False)
    runs = catalog_runs(s3_server.open_storage, f"s3://{s3_bucket}/out/")
    assert [r.uri_for("") for r in runs] == [f"s3://{s3_bucket}/out/runs/20260501T000000Z/",
                                             f"s3://{s3_bucket}/out/runs/20260601T000000Z/"]
    report = cost_report(runs, "run_id", rebuild_prices=default_prices())
    assert report.totals.images == 6 and list(report.groups["run_id"]) == ["20260501T000000Z", "20260601T000000Z"]
    # listed 8; done = 3 ok + 2 skipped; broken.jpg, f and g remain
    assert (report.listed, report.remaining) == (8, 3)
    assert report.projected_usd == pytest.approx(3 * report.summary["total_usd"] / 3)
    assert report.summary["prices"] is None  # the rebuilt run priced at defaults: two price sets
    with pytest.raises(ValueError, match="no runs"):
        catalog_runs(s3_server.open_storage, f"s3://{s3_bucket}/elsewhere/")


def test_cost_command_prints_tables_and_draws_a_chart(tmp_path, capsys):
    from jobs.cli import main

    out = open_storage(str(tmp_path / "out"))
    _write_run(out, "20260501T000000Z", _manifest(), ["photos/a.png"], True)
    chart = tmp_path / "cost.png"
    assert main(["cost", str(tmp_path / "out" / "runs" / "20260501T000000Z"), "--group-by", "prefix",
                 "--chart", str(chart)]) == 0
    text = capsys.readouterr().out
    assert "device idle" in text and "per ok image USD" in text and "scans/" in text
    assert "remaining 0" in text and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = str(tmp_path / "out" / "runs" / "20260501T000000Z")
    assert main(["cost", run, "--reprice", "cost.preset=h100-on-prem", "--chart", str(chart)]) == 0
    assert "h100-on-prem" in capsys.readouterr().out
    assert main(["cost", "--catalog", str(tmp_path / "out"), "--group-by", "month", "--chart", str(chart)]) == 0
    assert "2026-05" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["cost"])


@pytest.mark.slow
def test_a_backfill_writes_its_ledger_summary_report_and_trace(s3_server, s3_bucket, ray_local):
    """End to end: the trace context goes through the Ray workers and back; the ledger adds up."""
    import numpy as np
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from PIL import Image

    from actors.upscaler import UpscaleActor

    from pipeline.run.backfill import run_backfill
    from jobs.specs import build_run_spec
    from pipeline.run.telemetry import Telemetry

    inputs = s3_server.open_storage(f"s3://{s3_bucket}/in/")
    for i in range(3):
        image = io.BytesIO()
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(image, "PNG")
        inputs.put(f"p{i % 2}/img-{i}.png", image.getvalue())
    cfg = load_config([], [f"input.uri=s3://{s3_bucket}/in/", f"output.uri=s3://{s3_bucket}/out/",
                           f"storage.endpoint_url={s3_server.endpoint_url}"])
    spec = build_run_spec(cfg, "e2e", "", credentials=s3_server.credentials)
    spans = InMemorySpanExporter()
    with Telemetry(spans, batch=False) as telemetry:
        summary = run_backfill(spec, UpscaleActor, prices=PRICES, telemetry=telemetry)

    run = s3_server.open_storage(f"s3://{s3_bucket}/out/runs/e2e/")
    ledger, prices = read_ledger(run)
    assert prices == PRICES and len(ledger) == 3 and (ledger["status"] == "ok").all()
    assert (ledger["device_forward_seconds"] > 0).all() and (ledger["device_warmup_seconds"] > 0).all()
    assert ledger["device_idle_seconds"].sum() > 0 and ledger["device"].eq("cpu").all()
    stored = json.loads(run.get("summary.json"))["cost"]
    assert stored["total_usd"] == pytest.approx(ledger["total_usd"].sum()) == pytest.approx(summary.cost["total_usd"])
    assert 0 < stored["utilisation"] < 1
    assert b"Contact sheet" in run.get("report.html") and summary.report_uri.endswith("runs/e2e/report.html")
    # no signing identity: XMP labels only, counted and said on the page; their CPU is a ledger stage
    assert summary.c2pa == {"signed": 0, "sidecar": 0, "none": 3} and (ledger["cpu_provenance_seconds"] > 0).all()
    assert b"outputs carry the XMP label but no C2PA manifest" in run.get("report.html")

    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "backfill run")
    images = [s for s in finished if s.name == "image"]
    assert len(images) == 3 and all(s.parent.span_id == root.context.span_id for s in images)
    stages = [s.name for s in finished if s.parent and s.parent.span_id == images[0].context.span_id]
    assert sorted(stages) == sorted(["fetch", "decode", "model", "encode", "upload"])
