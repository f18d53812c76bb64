"""The backfill run: list -> skip done -> fetch/decode (CPU tasks) -> actor pool -> manifest.

The driver holds only a bounded window of metadata rows: inputs are listed to Parquet in
batches, Ray Data streams them, and manifest rows are written as they arrive. At the end the
manifest is streamed back (its metadata only, a batch at a time: pipeline/ledger/finish.py) for the
cost ledger, the summary and the report page.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import pyarrow.parquet as pq

from pipeline.ledger.cost import Prices
from pipeline.fleet.signing import check_before_run
from pipeline.listing.done_index import DoneIndex, DueSplit
from pipeline.ledger.finish import FinishRecord, finish_run
from pipeline.run.incremental import incremental_run
from op4ksr.errors import UserError
from pipeline.run.interrupted import RunInterrupted, interrupted_message
from pipeline.run.recovered import RecordedKeys, recovery_window, rows_from_reports
from pipeline.manifest.layout import output_image_key, run_key
from pipeline.listing.inputs import INPUTS_SCHEMA, check_listable, list_inputs, write_inputs_parquet
from pipeline.listing.read_only import check_output_apart, excluded_prefixes
from pipeline.manifest.records import MANIFEST_SCHEMA, manifest_table
from pipeline.run.spec import RunSpec
from pipeline.storage import ObjectInfo
from pipeline.run.telemetry import Telemetry
from pipeline.fleet.ray_session import ray_session

MANIFEST_FIRST_PART_ROWS = 1000
MANIFEST_MAX_PART_ROWS = 500_000
MANIFEST_PART_SECONDS = 600.0
ROW_GROUP_ROWS = 1000


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
    mean_niqe: float | None = None  # over the outputs with a NIQE (docs/QUALITY.md); lower is more natural
    dry_run: bool = False
    cost: dict = field(default_factory=dict)  # LedgerTotals.summary (pipeline/ledger/totals.py), with the prices used
    cost_uri: str = ""
    report_uri: str = ""
    estimate: dict = field(default_factory=dict)  # dry runs: pipeline.run.estimate.dry_run_estimate
    actors_peak: int = 0          # most model actors alive at once (sampled each second; pipeline/fleet/pool_watch.py)
    actors_mean: float = 0.0      # model actors alive on average while the run processed
    actor_restarts: int = 0       # actor processes replaced after a death
    lost_nodes: int = 0           # nodes that left the cluster during the run
    actors_rss_peak_bytes: int = 0  # the most resident memory one model actor process had (its beats, once a second)
    given_up: int = 0             # of `failed`: inputs given up (they killed their worker), not retried unless asked
    c2pa: dict = field(default_factory=dict)  # ok outputs by C2PA manifest: {"signed": n, "sidecar": n, "none": n}
    stopped: str = ""             # why the run stopped before every listed input had its row ("": it did not)


class ManifestWriter:
    """Appends records to runs/<id>/manifest/part-NNNNN.parquet; parts grow with the run.

    The first part holds MANIFEST_FIRST_PART_ROWS rows and each next one twice its predecessor, up
    to MANIFEST_MAX_PART_ROWS, so a 10 M-row run is about 30 objects rather than 10,000 tiny ones
    and a small run still has its first rows in storage early. A part is built on local disk a
    row group at a time (memory: one row group) and uploaded whole when it is full or
    MANIFEST_PART_SECONDS old, which bounds what a killed run's manifest lacks (its reports
    still say what was done).
    """

    def __init__(self, storage, run_id: str, first_rows: int = MANIFEST_FIRST_PART_ROWS,
                 max_rows: int = MANIFEST_MAX_PART_ROWS, part_seconds: float = MANIFEST_PART_SECONDS):
        self.storage, self.run_id = storage, run_id
        self.part_rows, self.max_rows, self.part_seconds = first_rows, max_rows, part_seconds
        self.buffer: list[dict] = []
        self.parts = 0
        self._writer: pq.ParquetWriter | None = None
        self._path, self._rows, self._opened = "", 0, 0.0

    def add(self, records: list[dict]) -> None:
        if records and self._rows == 0 and not self.buffer:
            self._opened = time.monotonic()  # the part's first row: its age counts from here
        self.buffer += records
        while len(self.buffer) >= min(ROW_GROUP_ROWS, self.part_rows - self._rows):
            take = min(ROW_GROUP_ROWS, self.part_rows - self._rows)
            self._write(self.buffer[:take])
            self.buffer = self.buffer[take:]
            if self._rows >= self.part_rows:
                self._upload()
                if self.buffer:
                    self._opened = time.monotonic()
        if (self.buffer or self._rows) and time.monotonic() - self._opened > self.part_seconds:
            self._write(self.buffer)
            self.buffer = []
            self._upload()

    def close(self) -> None:
        if self.buffer or (self.parts == 0 and self._writer is None):
            self._write(self.buffer)
        self.buffer = []
        if self._writer is not None:
            self._upload()

    def _write(self, rows: list[dict]) -> None:
        if self._writer is None:
            fd, self._path = tempfile.mkstemp(prefix="op4ksr-manifest-", suffix=".parquet")
            os.close(fd)
            self._writer, self._rows = pq.ParquetWriter(self._path, MANIFEST_SCHEMA), 0
        self._writer.write_table(manifest_table(rows))
        self._rows += len(rows)

    def _upload(self) -> None:
        self._writer.close()
        try:
            self.storage.put_file(run_key(self.run_id, f"manifest/part-{self.parts:05d}.parquet"), self._path,
                                  "application/vnd.apache.parquet")
        finally:
            os.remove(self._path)
        self._writer, self._rows = None, 0
        self.parts += 1
        self.part_rows = min(2 * self.part_rows, self.max_rows)


def new_run_id() -> str:
    """A sortable run id from the UTC time."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def run_backfill(spec: RunSpec, model_stage, on_progress: Callable[[Progress], None] = lambda p: None, *,
                 prices: Prices | None = None, telemetry: Telemetry | None = None,
                 listing: Iterable[ObjectInfo] | None = None) -> RunSummary:
    """Process every input under spec.input that is not done; one manifest row per listed input.

    `model_stage` is the model actor class (actors.upscaler.UpscaleActor; pipeline.run.dataflow).
    Writes runs/<id>/{manifest/, cost.parquet (priced with `prices`, else spec.prices), summary.json, report.html};
    `telemetry` (default: none) gets the run's trace and metrics. Holds the output prefix's run
    lock throughout; lists only inputs modified after spec.since when set; a run with no
    failures moves the watermark (pipeline.run.incremental). `listing`: these inputs of spec.input
    instead of its whole listing (a sample: `op4ksr compare`); such a run never moves the watermark.
    """
    check_output_apart(spec.input.uri, spec.output.uri)  # before anything is written
    check_listable(spec.input.open(), spec.extensions)
    check_before_run(spec.actor.provenance)  # a bad signing identity is refused before anything is listed
    outputs = spec.output.open()
    outputs.check_writable()
    with incremental_run(outputs, spec) as increment:
        summary = _run(spec, model_stage, increment.since, on_progress, prices, telemetry or Telemetry(), listing)
        if listing is None:  # a sample says nothing about the inputs it left out
            increment.finish(summary)
    return summary


def _run(spec: RunSpec, model_stage, since: dt.datetime | None, on_progress, prices: Prices | None,
         telemetry: Telemetry, listing: Iterable[ObjectInfo] | None = None) -> RunSummary:
    inputs, outputs = spec.input.open(), spec.output.open()
    outputs.put(run_key(spec.run_id, "config.yaml"), spec.config_yaml.encode(), "text/yaml")
    writer = ManifestWriter(outputs, spec.run_id)
    # Inputs earlier runs' manifests prove done get their `skipped` rows here; the rest are due.
    # Inputs an earlier run gave up on (they killed the actor's process) get a `failed` row, unless asked.
    index, given_up = DoneIndex.build_with_given_up(outputs, spec.model_id, spec.params_hash, exclude_run=spec.run_id)
    due = DueSplit(index, outputs, run_key(spec.run_id, "due.parquet"), spec,
                   None if spec.dry_run else lambda rows: (writer.add(rows), telemetry.record(rows)),
                   given_up=None if spec.retry_given_up else given_up)
    if listing is None:
        listing = list_inputs(inputs, spec.extensions, limit=spec.limit, since=since,
                              exclude=excluded_prefixes(spec.input.uri, [spec.output.uri]))
    total = write_inputs_parquet(listing, outputs, run_key(spec.run_id, "inputs.parquet"),
                                 output_key=functools.partial(output_image_key, fmt=spec.actor.output_format),
                                 on_batch=due, earlier_owners=functools.partial(index.owners.owners_of,
                                                                                extensions=spec.extensions))
    due_rows = due.close(INPUTS_SCHEMA)
    progress = Progress(total=total, skipped=0 if spec.dry_run else due.skipped,
                        failed=0 if spec.dry_run else due.given_up)
    with telemetry.run(spec.run_id, **{"op4ksr.images.listed": total}) as traceparent:
        actors_ended_at, pool, stopped = time.time(), None, None
        if due_rows and not spec.dry_run:
            actors_ended_at, pool, stopped = _process_or_stop(spec, model_stage, outputs, traceparent, writer,
                                                              telemetry, progress, on_progress)
        writer.close()
        estimate = {}
        if spec.dry_run and total:
            from pipeline.run.estimate import dry_run_estimate

            estimate = dry_run_estimate(outputs, run_key(spec.run_id, "due.parquet"), spec.run_id,
                                        spec.model_id, spec.params_hash)
        why = "" if stopped is None else ("interrupted (Ctrl-C)" if isinstance(stopped, KeyboardInterrupt) else str(stopped))
        summary = _finish(spec, inputs, outputs, progress, prices or spec.prices, actors_ended_at, estimate, pool, why)
        telemetry.set_run_attributes(**{f"op4ksr.images.{k}": getattr(summary, k) for k in ("ok", "failed", "skipped")},
                                     **{"op4ksr.cost.total_usd": summary.cost.get("total_usd")})
    if isinstance(stopped, KeyboardInterrupt):
        raise RunInterrupted(interrupted_message(summary), summary)
    if stopped is not None:
        raise stopped
    return summary


def _process_or_stop(spec, model_stage, outputs, traceparent, writer, telemetry, progress, on_progress):
    """_process's (when, pool, None); or, when the run stops early (Ctrl-C; no actor could start:
    ActorStartFailed, ActorStartTimeout), (when, None, why) once the images it finished have their rows:
    those in flight are recovered from their reports (pipeline/run/recovered.py). The finish phase then
    records and prices what was done, and summary.json says why the rest has no row."""
    recorded = RecordedKeys()
    try:
        return (*_process(spec, model_stage, outputs, traceparent, writer, telemetry, progress, on_progress,
                          recorded), None)
    except (KeyboardInterrupt, UserError) as err:
        finished = rows_from_reports(outputs, spec.run_id, recorded, recovery_window(spec.pool))
        writer.add(finished)
        progress.ok += len(finished)
        return time.time(), None, err


def _process(spec, model_stage, outputs, traceparent, writer, telemetry, progress, on_progress, recorded=None):
    """Run the dataset, writing rows as they come; returns (when, unix s, the last row arrived, the
    pool's PoolReport: pipeline/fleet/pool_watch.py)."""
    from pipeline.fleet.attempts import AttemptBook
    from pipeline.run.dataflow import ExecutorStop, build_dataset, configure_ray_data, iter_records
    from pipeline.fleet.pool_watch import ActorRoll, PoolWatch, on_driver_node

    with ray_session(spec.ray_num_cpus):
        configure_ray_data(spec.pool)
        roll, book = on_driver_node(ActorRoll), on_driver_node(AttemptBook, spec.pool.max_attempts_per_input)
        dataset = build_dataset(spec, model_stage, outputs.uri_for(run_key(spec.run_id, "due.parquet")),
                                traceparent, roll, book)
        # however the loop ends (done, given up, an error, Ctrl-C), the records' pump, the dataset's executor
        # and the pool watch's thread are stopped and joined before Ray shuts down (pool_watch.records)
        with ExecutorStop() as stop_executors, PoolWatch(roll, spec.pool) as watch, \
                contextlib.closing(watch.records(iter_records(dataset, spec.pool, _model_keys(spec)),
                                                 stop_executors)) as records:
            for rows in records:
                writer.add(rows)
                if recorded is not None:
                    recorded.add(rows)
                telemetry.record(rows)
                for row in rows:
                    setattr(progress, row["status"], getattr(progress, row["status"]) + 1)
                on_progress(progress)
        return time.time(), watch.report()  # the pool is released here, before Ray shuts down


def _model_keys(spec: RunSpec) -> str:
    """The config keys a model actor starts with, as the user wrote them (for ActorStartFailed)."""
    model, peer = spec.model.spec, spec.model.peer
    what = (f"peer.kind={peer.kind}, " + (f"peer.path={peer.path}" if peer.kind == "spandrel" else
                                          f"peer.command={peer.command}") if peer else f"model.path={model.source}")
    return (f"{what}, model.device={model.device}, model.dtype={model.dtype}, actors.num_gpus={spec.pool.num_gpus:g}, "
            f"actors.warmup_shapes={[list(s) for s in spec.actor.warmup_shapes]}")


def _finish(spec, inputs, outputs, progress, prices: Prices, actors_ended_at: float, estimate: dict,
            pool, stopped: str = "") -> RunSummary:
    """Cost ledger, summary.json and report.html for the finished run, streamed from its manifest
    (pipeline/ledger/finish.py); actors are charged until `actors_ended_at`, or until they ended
    (`pool`: the run's PoolReport, None when no actor ran)."""
    run_storage = spec.output.child(run_key(spec.run_id, "")).open()
    record = FinishRecord(spec.run_id, actors_ended_at, time.perf_counter() - progress.started, spec.dry_run, estimate,
                          progress.total, pool=dataclasses.asdict(pool) if pool else {}, stopped=stopped)
    record.save(run_storage)  # first, so that `op4ksr report` can redo what follows if it fails
    return RunSummary(**finish_run(run_storage, record, prices, spec.actor.report_threshold, inputs, outputs))
