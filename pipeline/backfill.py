"""The backfill run: list -> skip done -> fetch/decode (CPU tasks) -> actor pool -> manifest.

The driver holds only a bounded window of metadata rows: inputs are listed to Parquet in
batches, Ray Data streams them, and manifest rows are written as they arrive.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.layout import run_key
from pipeline.listing import list_inputs, write_inputs_parquet
from pipeline.records import FIELDS, MANIFEST_SCHEMA
from pipeline.runspec import RunSpec

MANIFEST_PART_ROWS = 1000


@dataclass
class Progress:
    total: int = 0
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.perf_counter)

    @property
    def done(self) -> int:
        return self.ok + self.failed + self.skipped

    @property
    def images_per_second(self) -> float:
        return self.done / max(1e-9, time.perf_counter() - self.started)

    @property
    def eta_seconds(self) -> float | None:
        rate = self.images_per_second
        return (self.total - self.done) / rate if rate > 0 else None

    def line(self) -> str:
        eta = self.eta_seconds
        return (f"done {self.done}/{self.total}  ok {self.ok}  failed {self.failed}  skipped {self.skipped}  "
                f"remaining {self.total - self.done}  {self.images_per_second:.2f} img/s  "
                f"ETA {'-' if eta is None else f'{eta:.0f}s'}")


@dataclass
class RunSummary:
    run_id: str
    total: int
    ok: int
    failed: int
    skipped: int
    seconds: float
    manifest_uri: str
    summary_uri: str
    gpu_seconds: float = 0.0
    cpu_seconds: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    flagged: int = 0
    dry_run: bool = False


class ManifestWriter:
    """Appends records to runs/<id>/manifest/part-NNNNN.parquet, one part per MANIFEST_PART_ROWS."""

    def __init__(self, storage, run_id: str):
        self.storage, self.run_id = storage, run_id
        self.buffer: list[dict] = []
        self.parts = 0

    def add(self, records: list[dict]) -> None:
        self.buffer += records
        while len(self.buffer) >= MANIFEST_PART_ROWS:
            self._flush(self.buffer[:MANIFEST_PART_ROWS])
            self.buffer = self.buffer[MANIFEST_PART_ROWS:]

    def close(self) -> None:
        if self.buffer or self.parts == 0:
            self._flush(self.buffer)
        self.buffer = []

    def _flush(self, rows: list[dict]) -> None:
        table = pa.Table.from_pylist([{k: r.get(k) for k in FIELDS} for r in rows], schema=MANIFEST_SCHEMA)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        self.storage.put(run_key(self.run_id, f"manifest/part-{self.parts:05d}.parquet"),
                         sink.getvalue().to_pybytes(), "application/vnd.apache.parquet")
        self.parts += 1


def new_run_id() -> str:
    """A sortable run id from the UTC time."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def run_backfill(spec: RunSpec, on_progress: Callable[[Progress], None] = lambda p: None) -> RunSummary:
    """Process every input under spec.input that is not done; one manifest row per listed input."""

    from pipeline.dataflow import build_dataset, quiet_ray_data

    inputs, outputs = spec.input.open(), spec.output.open()
    outputs.check_writable()
    outputs.put(run_key(spec.run_id, "config.yaml"), spec.config_yaml.encode(), "text/yaml")
    listing = list_inputs(inputs, spec.extensions, limit=spec.limit)
    total = write_inputs_parquet(listing, outputs, run_key(spec.run_id, "inputs.parquet"))
    progress = Progress(total=total)
    writer = ManifestWriter(outputs, spec.run_id)
    totals = dict(gpu_seconds=0.0, cpu_seconds=0.0, bytes_in=0, bytes_out=0, flagged=0)
    if total and not spec.dry_run:
        with _ray_session(spec.ray_num_cpus):
            quiet_ray_data()
            dataset = build_dataset(spec, outputs.uri_for(run_key(spec.run_id, "inputs.parquet")))
            for batch in dataset.iter_batches(batch_format="pandas", batch_size=None):
                rows = batch.to_dict("records")
                writer.add(rows)
                for row in rows:
                    setattr(progress, row["status"], getattr(progress, row["status"]) + 1)
                    for name in ("gpu_seconds", "cpu_seconds", "bytes_in", "bytes_out"):
                        totals[name] += _number(row.get(name))
                    totals["flagged"] += bool(row.get("flagged") is True)
                on_progress(progress)
    writer.close()
    run_uri = outputs.uri_for(run_key(spec.run_id, "summary.json")).rsplit("/", 1)[0]
    summary = RunSummary(spec.run_id, total, progress.ok, progress.failed, progress.skipped,
                         time.perf_counter() - progress.started, f"{run_uri}/manifest/",
                         outputs.uri_for(run_key(spec.run_id, "summary.json")), dry_run=spec.dry_run, **totals)
    outputs.put(run_key(spec.run_id, "summary.json"), json.dumps(asdict(summary), indent=2).encode(), "application/json")
    return summary


def _number(value) -> float:
    return 0.0 if value is None or value != value else float(value)  # None and NaN count as 0


@contextlib.contextmanager
def _ray_session(num_cpus: float | None):
    """Use the Ray already connected (a cluster, a test fixture), else start a local one for this run."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        yield
    finally:
        ray.shutdown()
