"""Traces and metrics of a run, checked with OpenTelemetry's in-memory exporter and reader."""
import io
import json

import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from PIL import Image

from jobs.config import load_config
from pipeline.run.fetch import FetchContext, FetchDecode
from pipeline.manifest.records import new_record
from pipeline.storage import StorageSpec
from jobs.specs import size_policy, telemetry_from_config
from pipeline.run.telemetry import STAGES, Telemetry, stage_intervals

T0 = 1_780_000_000.0


def _ok(key, traceparent, start=T0):
    return new_record(key, "r1", status="ok", traceparent=traceparent, started_at=start, t_fetch=0.1, t_decode=0.2,
                      model_started_at=start + 1, t_model=1.5, gpu_seconds=0.75, device="cuda:0",
                      encode_started_at=start + 3, t_encode=0.3, t_upload=0.4, actor_id="node:7",
                      ap_excess=0.02, flagged=False, bytes_in=100, bytes_out=400)


def _failed(key, traceparent):
    return new_record(key, "r1", status="failed", traceparent=traceparent, started_at=T0, t_fetch=0.1,
                      error_class="ImageDecodeError", error="not an image", actor_id="node:7")


@pytest.fixture
def telemetry():
    spans, metrics = InMemorySpanExporter(), InMemoryMetricReader()
    tel = Telemetry(spans, metrics, batch=False)
    yield tel, spans, metrics
    tel.shutdown()


def test_one_trace_per_run_with_a_span_per_image_and_a_child_per_stage(telemetry):
    tel, exporter, _ = telemetry
    with tel.run("r1") as traceparent:
        assert traceparent.startswith("00-")
        tel.record([_ok("a.png", traceparent), _failed("b.jpg", traceparent)])
        tel.set_run_attributes(**{"op4ksr.images.ok": 1})
    spans = exporter.get_finished_spans()
    run = next(s for s in spans if s.name == "backfill run")
    assert run.parent is None and run.attributes["op4ksr.images.ok"] == 1
    assert {s.context.trace_id for s in spans} == {run.context.trace_id}  # one trace
    images = {s.attributes["op4ksr.key"]: s for s in spans if s.name == "image"}
    assert set(images) == {"a.png", "b.jpg"}
    assert all(s.parent.span_id == run.context.span_id for s in images.values())
    a = images["a.png"]
    children = sorted((s for s in spans if s.parent and s.parent.span_id == a.context.span_id), key=lambda s: s.start_time)
    assert [s.name for s in children] == list(STAGES)
    ns = 1_000_000_000
    assert (a.start_time, a.end_time) == (round(T0 * ns), round((T0 + 3.7) * ns))
    assert (children[1].start_time, children[1].end_time) == (round((T0 + 0.1) * ns), round((T0 + 0.3) * ns))
    assert children[2].end_time - children[2].start_time == 1_500_000_000
    assert a.attributes["op4ksr.status"] == "ok" and a.attributes["op4ksr.gpu_seconds"] == 0.75
    assert a.attributes["op4ksr.device"] == "cuda:0" and "op4ksr.error_class" not in a.attributes
    b = images["b.jpg"]
    assert b.status.status_code == StatusCode.ERROR and "ImageDecodeError" in b.status.description
    assert [s.name for s in spans if s.parent and s.parent.span_id == b.context.span_id] == ["fetch"]


def _points(reader, name):
    for resource in reader.get_metrics_data().resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    return metric.data.data_points
    return []


def test_metrics_count_images_by_status_and_time_stages(telemetry):
    tel, _, reader = telemetry
    with tel.run("r1") as traceparent:
        tel.record([_ok("a.png", traceparent), _ok("c.png", traceparent), _failed("b.jpg", traceparent),
                    new_record("old.png", "r0", status="skipped")])  # no context or timestamps: counted only
    by_status = {p.attributes["status"]: p.value for p in _points(reader, "op4ksr.images")}
    assert by_status == {"ok": 2, "failed": 1, "skipped": 1}
    durations = {p.attributes["stage"]: p for p in _points(reader, "op4ksr.stage.duration")}
    assert durations["fetch"].count == 3 and durations["model"].count == 2
    assert durations["model"].sum == pytest.approx(3.0)
    assert [p.value for p in _points(reader, "op4ksr.device.seconds")] == [pytest.approx(1.5)]


def test_disabled_telemetry_does_nothing():
    tel = Telemetry()
    with tel.run("r1") as traceparent:
        assert traceparent == ""
        tel.record([_ok("a.png", "")])
    tel.shutdown()


def test_stage_intervals_follow_the_recorded_anchors():
    row = _ok("a.png", "")
    row.update(t_upload=None)
    assert [(name, round(start - T0, 3), round(end - T0, 3)) for name, start, end in stage_intervals(row)] == [
        ("fetch", 0, 0.1), ("decode", 0.1, 0.3), ("model", 1, 2.5), ("encode", 3, 3.3)]


def test_file_exporter_writes_json_lines(tmp_path):
    path = tmp_path / "telemetry.jsonl"
    cfg = load_config([], ["telemetry.exporter=file", f"telemetry.file={path}"])
    with telemetry_from_config(cfg) as tel:
        with tel.run("r1") as traceparent:
            tel.record([_ok("a.png", traceparent)])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    names = [line["name"] for line in lines if "name" in line and "context" in line]
    assert sorted(names) == sorted(["backfill run", "image", *STAGES])
    assert any("resource_metrics" in line for line in lines)
    with pytest.raises(ValueError, match="telemetry.file"):
        telemetry_from_config(load_config([], ["telemetry.exporter=file"]))


def test_otlp_and_console_exporters_build_from_config():
    for exporter in ("console", "otlp"):
        cfg = load_config([], [f"telemetry.exporter={exporter}", "telemetry.otlp_endpoint=http://127.0.0.1:1"])
        tel = telemetry_from_config(cfg)
        assert tel.enabled
        tel._tracer_provider.shutdown()  # nothing recorded: no export is attempted
        tel._meter_provider.shutdown(timeout_millis=100)


def test_the_fetch_stage_copies_the_run_context_into_the_record(tmp_path):
    (tmp_path / "in").mkdir()
    image = io.BytesIO()
    Image.new("RGB", (16, 12), "red").save(image, "PNG")
    (tmp_path / "in" / "a.png").write_bytes(image.getvalue())
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    ctx = FetchContext(StorageSpec(str(tmp_path / "in")), StorageSpec(str(tmp_path / "out")), "r1", "m", "p", "png",
                       size_policy(load_config()), traceparent)
    record = FetchDecode(ctx).fetch_one({"key": "a.png", "etag": "e"})
    assert record["status"] is None and record["traceparent"] == traceparent
    assert record["started_at"] > T0 and record["t_fetch"] > 0 and record["t_decode"] > 0
    assert record["cpu_seconds"] == pytest.approx(record["cpu_fetch_seconds"] + record["cpu_decode_seconds"])
