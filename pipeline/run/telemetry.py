"""OpenTelemetry for a run: one trace per run, a span per image with a child span per stage, metrics.

Design (docs/COST.md, "Traces"): Ray workers do not export spans. The driver opens the run span
and hands its W3C `traceparent` to the fetch stage, which copies it into every record; the
record carries it through the actor and back. When a record reaches the driver, the image span
is created under the context the record carried, with explicit start and end times taken from
the record's own stage timestamps (`started_at + t_fetch`, ...). So the trace is exactly the
manifest, no exporter runs inside a worker, and a worker that dies loses no half-sent spans.

Metrics: `op4ksr.images` (counter, by status), `op4ksr.stage.duration` (histogram in seconds,
by stage) and `op4ksr.device.seconds` (counter of forward seconds, by device).
"""
from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator

from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from op4ksr.errors import UserError

STAGES = ("fetch", "decode", "model", "encode", "upload")
DURATION_BUCKETS_S = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_PROPAGATOR = TraceContextTextMapPropagator()
_IMAGE_ATTRIBUTES = ("status", "actor_id", "device", "input_size", "output_size", "gpu_seconds", "cpu_seconds",
                     "bytes_in", "bytes_out", "ap_excess", "flagged", "error_class")


class Telemetry:
    """Traces and metrics of backfill runs; disabled (every call a no-op) without exporters."""

    def __init__(self, span_exporter: SpanExporter | None = None, metric_reader: MetricReader | None = None,
                 *, batch: bool = True, closing: tuple = ()):
        self.enabled = span_exporter is not None or metric_reader is not None
        self._closing = closing  # files to close after the providers have flushed
        self._run_span = None
        resource = Resource.create({"service.name": "op4ksr"})
        self._tracer_provider = TracerProvider(resource=resource)
        if span_exporter is not None:
            processor = BatchSpanProcessor(span_exporter) if batch else SimpleSpanProcessor(span_exporter)
            self._tracer_provider.add_span_processor(processor)
        self._meter_provider = MeterProvider(resource=resource, metric_readers=[metric_reader] if metric_reader else [])
        self.tracer = self._tracer_provider.get_tracer("op4ksr.pipeline")
        meter = self._meter_provider.get_meter("op4ksr.pipeline")
        self.images = meter.create_counter("op4ksr.images", "{image}", "images by final status")
        self.stage_duration = meter.create_histogram("op4ksr.stage.duration", "s", "wall seconds per stage",
                                                     explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S)
        self.device_seconds = meter.create_counter("op4ksr.device.seconds", "s", "device seconds of forwards")

    @contextlib.contextmanager
    def run(self, run_id: str, **attributes) -> Iterator[str]:
        """Open the run's span for the block; yields its `traceparent` ('' when disabled)."""
        if not self.enabled:
            yield ""
            return
        with self.tracer.start_as_current_span("backfill run", attributes={"op4ksr.run_id": run_id,
                                                                           **_attributes(attributes)}) as span:
            self._run_span = span
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier, trace.set_span_in_context(span))
            yield carrier.get("traceparent", "")

    def set_run_attributes(self, **attributes) -> None:
        """Attributes known only at the end of the run (counts, cost) on the open run span."""
        if self._run_span is not None:
            self._run_span.set_attributes(_attributes(attributes))

    def record(self, rows: list[dict]) -> None:
        """Spans and metrics for manifest records as they reach the driver."""
        if not self.enabled:
            return
        for row in rows:
            self._metrics(row)
            if _text(row.get("traceparent")):
                self._image_span(row)

    def _metrics(self, row: dict) -> None:
        self.images.add(1, {"status": _text(row.get("status")) or "unknown"})
        for stage in STAGES:
            seconds = _number(row.get(f"t_{stage}"))
            if seconds is not None:
                self.stage_duration.record(seconds, {"stage": stage})
        forward = _number(row.get("gpu_seconds"))
        if forward:
            self.device_seconds.add(forward, {"device": _text(row.get("device")) or "unknown"})

    def _image_span(self, row: dict) -> None:
        stages = stage_intervals(row)
        parent = _PROPAGATOR.extract({"traceparent": row["traceparent"]})
        start = _number(row.get("started_at"))
        if start is None:
            return  # no timestamps (an old record): the metrics above still count it
        end = max([start] + [stop for _, _, stop in stages])
        attributes = {"op4ksr.key": row["key"], "op4ksr.run_id": row.get("run_id") or ""}
        attributes |= {f"op4ksr.{name}": row.get(name) for name in _IMAGE_ATTRIBUTES}
        span = self.tracer.start_span("image", context=parent, start_time=_ns(start), attributes=_attributes(attributes))
        if row.get("status") == "failed":
            span.set_status(Status(StatusCode.ERROR, f"{row.get('error_class')}: {row.get('error')}"))
        inside = trace.set_span_in_context(span)
        for stage, stage_start, stage_end in stages:
            self.tracer.start_span(stage, context=inside, start_time=_ns(stage_start),
                                   attributes={"op4ksr.stage": stage}).end(end_time=_ns(stage_end))
        span.end(end_time=_ns(end))

    def shutdown(self) -> None:
        """Flush and stop the exporters (the file exporter's file is closed after them)."""
        if self.enabled:
            self._tracer_provider.shutdown()
            self._meter_provider.shutdown()
        for stream in self._closing:
            stream.close()

    def __enter__(self) -> Telemetry:
        return self

    def __exit__(self, *exc_info) -> None:
        self.shutdown()


def stage_intervals(row: dict) -> list[tuple[str, float, float]]:
    """(stage, start, end) in unix seconds for each stage the record ran, from its timestamps and durations.

    fetch and decode run back to back from `started_at`; model from `model_started_at` for
    `t_model`; encode and upload back to back from `encode_started_at`.
    """
    out = []
    for anchor, stages in (("started_at", ("fetch", "decode")), ("model_started_at", ("model",)),
                           ("encode_started_at", ("encode", "upload"))):
        at = _number(row.get(anchor))
        for stage in stages:
            seconds = _number(row.get(f"t_{stage}"))
            if at is None or seconds is None:
                break
            out.append((stage, at, at + seconds))
            at += seconds
    return out


def open_telemetry(exporter: str, *, file: str = "", otlp_endpoint: str = "") -> Telemetry:
    """The Telemetry for an exporter: none, console (stderr), file (JSON lines to `file`) or otlp (gRPC)."""
    if exporter == "none":
        return Telemetry()
    if exporter == "console":
        return Telemetry(ConsoleSpanExporter(out=sys.stderr),
                         PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stderr)))
    if exporter == "file":
        if not file:
            raise UserError("telemetry.exporter=file needs telemetry.file (a local path for the JSON lines)")
        out = _LockedLines(open(file, "a", encoding="utf-8"))  # noqa: SIM115 - closed by shutdown()
        return Telemetry(ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n"),
                         PeriodicExportingMetricReader(ConsoleMetricExporter(
                             out=out, formatter=lambda data: data.to_json(indent=None) + "\n")), closing=(out,))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        endpoint = otlp_endpoint or None  # None: OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4317
        return Telemetry(OTLPSpanExporter(endpoint=endpoint), PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=endpoint)))
    raise UserError(f"telemetry.exporter={exporter!r} is not one of none, console, file, otlp")


class _LockedLines:
    """A text file shared by the span and metric exporters' threads: one whole line per write."""

    def __init__(self, stream):
        self._stream, self._lock = stream, threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            return self._stream.write(text)

    def flush(self) -> None:
        with self._lock:
            self._stream.flush()

    def close(self) -> None:
        with self._lock:
            self._stream.close()


def _attributes(values: dict) -> dict:
    """Attributes OpenTelemetry accepts: no None or NaN; numpy scalars as Python ones."""
    out = {}
    for name, value in values.items():
        if hasattr(value, "item"):
            value = value.item()
        if value is None or (isinstance(value, float) and value != value):
            continue
        out[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return out


def _text(value) -> str:
    """A string field of a row from pandas, where a missing value may be None or NaN."""
    return value if isinstance(value, str) else ""


def _number(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


def _ns(seconds: float) -> int:
    return int(round(seconds * 1e9))
