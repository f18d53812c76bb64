"""The finish phase of a run, streamed: manifest -> cost.parquet, summary.json, report.html.

Two passes over the manifest parts, a record batch at a time (pipeline/ledger/manifest_scan.py):
1. the few columns that describe the actors (their lifetimes are shared over their rows) and
   the range of ap_excess (the histogram's bins);
2. every row: its priced ledger row goes straight to a local cost.parquet, and the row is
   counted into the run's totals, the ledger totals and the page's digest.
Memory is one batch plus what grows by 8 bytes per ok image (the per-image USD quantiles),
whatever the run's length. `op4ksr report RUN` runs the same code on a finished (or crashed) run,
so a rebuild writes what the run itself wrote; `finish.json`, saved before the first pass, keeps
what only the live run knew (when the actors ended, its wall seconds, the dry run's estimate).
"""
from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from typing import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.ledger.cost import (LEDGER_SCHEMA, LostWork, Prices, actor_activity, build_ledger,
                                  combine_actor_activity, normalise_manifest)
from pipeline.ledger.page import DIGEST_COLUMNS, ReportDigest, write_report_digest
from pipeline.ledger.totals import LedgerTotals
from pipeline.ledger.manifest_scan import BATCH_ROWS, manifest_parts, scan_manifest
from pipeline.manifest.records import STATUSES, given_up
from pipeline.storage import ObjectNotFoundError, Storage

FINISH_KEY = "finish.json"
_ACTOR_COLUMNS = ["key", "status", "actor_id", "gpu_seconds", "actor_started_at", "actor_load_seconds", "actor_warmup_seconds",
                  "started_at", "t_fetch", "t_decode", "model_started_at", "t_model", "encode_started_at", "t_encode",
                  "t_upload", "ap_excess"]
_RUN_SUMS = ("gpu_seconds", "cpu_seconds", "bytes_in", "bytes_out")
POOL_FIELDS = ("actors_peak", "actors_mean", "actor_restarts", "lost_nodes", "actors_rss_peak_bytes")  # summary.json's view of the pool


@dataclasses.dataclass(frozen=True)
class FinishRecord:
    """runs/<id>/finish.json: what the finish phase needs that the manifest does not hold."""

    run_id: str
    actors_ended_at: float | None  # unix s the last row arrived: actors are charged until then (None: each its own last row)
    seconds: float                 # the run's wall seconds up to its finish phase
    dry_run: bool = False
    estimate: dict = dataclasses.field(default_factory=dict)
    listed: int | None = None      # inputs listed (a dry run lists without manifest rows); None: the manifest's rows
    pool: dict = dataclasses.field(default_factory=dict)  # pipeline.fleet.pool_watch.PoolReport as a dict ({}: none)
    stopped: str = ""  # why the run stopped before every listed input had a row (Ctrl-C, no actor could start)

    def save(self, run_storage: Storage) -> None:
        run_storage.put(FINISH_KEY, json.dumps(dataclasses.asdict(self), indent=2).encode(), "application/json")

    @classmethod
    def load(cls, run_storage: Storage) -> FinishRecord:
        """The run's finish.json; for a run that has none (older), one from its summary.json, else from its id."""
        try:
            return cls(**json.loads(run_storage.get(FINISH_KEY)))
        except ObjectNotFoundError:
            pass
        try:
            summary = json.loads(run_storage.get("summary.json"))
            return cls(summary["run_id"], None, summary.get("seconds", 0.0), summary.get("dry_run", False),
                       summary.get("estimate") or {}, summary.get("total"))
        except ObjectNotFoundError:
            return cls(run_storage.spec.uri.rstrip("/").rsplit("/", 1)[-1], None, 0.0)


C2PA_STATES = ("signed", "sidecar", "none")  # an ok output's C2PA manifest (docs/PROVENANCE.md)


def finish_run(run_storage: Storage, record: FinishRecord, prices: Prices, threshold: float,
               inputs: Storage, outputs: Storage, batch_rows: int = BATCH_ROWS) -> dict:
    """Write cost.parquet, summary.json and report.html of the run in `run_storage`; returns summary.json's dict.

    `inputs` and `outputs` give the contact sheet's images; `threshold` is report.threshold.
    """
    activity, ap_range, attempted = _first_pass(run_storage, batch_rows)
    lost = lost_work(record.pool, activity, attempted)
    counts = dict.fromkeys(STATUSES, 0) | dict.fromkeys(_RUN_SUMS, 0.0) | {"flagged": 0, "total": 0, "niqe_sum": 0.0,
                                                                          "niqe_count": 0, "given_up": 0,
                                                                          "c2pa": dict.fromkeys(C2PA_STATES, 0)}
    totals, digest = LedgerTotals(), ReportDigest(ap_range)
    fd, path = tempfile.mkstemp(prefix="op4ksr-cost-", suffix=".parquet")
    os.close(fd)
    try:
        schema = LEDGER_SCHEMA.with_metadata({"op4ksr.prices": json.dumps(dataclasses.asdict(prices))})
        with pq.ParquetWriter(path, schema) as writer:
            for manifest, ledger in ledger_batches(run_storage, prices, record.actors_ended_at, activity, batch_rows,
                                                   lost):
                writer.write_table(pa.Table.from_pandas(ledger, schema=schema, preserve_index=False))
                totals.add(ledger)
                digest.add(manifest.reindex(columns=DIGEST_COLUMNS))
                _count(counts, manifest)
        run_storage.put_file("cost.parquet", path, "application/vnd.apache.parquet")
    finally:
        os.remove(path)
    summary = _summary(run_storage, record, counts, totals.summary(prices))
    run_storage.put("summary.json", json.dumps(summary, indent=2).encode(), "application/json")
    write_report_digest(run_storage, summary, digest, totals, prices, threshold, inputs, outputs)
    return summary


def ledger_batches(run_storage: Storage, prices: Prices, run_ended_at: float | None,
                   activity: pd.DataFrame | None = None, batch_rows: int = BATCH_ROWS, lost: LostWork | None = None):
    """(manifest batch, its priced ledger rows) over the run's manifest; `activity`, `lost`: the first pass's, if done."""
    if activity is None:
        activity, _, attempted = _first_pass(run_storage, batch_rows)
        lost = lost_work(FinishRecord.load(run_storage).pool, activity, attempted)
    for batch in scan_manifest(run_storage, batch_rows=batch_rows):
        manifest = normalise_manifest(batch.to_pandas())
        yield manifest, build_ledger(manifest, prices, run_ended_at, actors=activity, lost=lost)


def lost_work(pool: dict, activity: pd.DataFrame | None, attempted: int) -> LostWork:
    """The ledger's view of a run's PoolReport: when early-ended actors stopped, and the device seconds
    lost with dead ones (all of a dead actor's life if it delivered no row), shared over `attempted` rows."""
    died = pool.get("died") or {}
    known = set() if activity is None else set(activity.index)
    lost_by_actor = {actor: d["lost_seconds"] if actor in known else max(0.0, d["ended_at"] - d["started_at"])
                     for actor, d in died.items()}
    total = sum(lost_by_actor.values())
    return LostWork(ended=dict(pool.get("ended") or {}), lost_by_actor=lost_by_actor,
                    per_row=total / attempted if attempted else 0.0)


def _first_pass(run_storage: Storage, batch_rows: int) -> tuple[pd.DataFrame | None, tuple[float, float, int], int]:
    """(the run's actor_activity, (min, max, count) of ap_excess, rows not skipped)."""
    activity, low, high, count, attempted = None, np.inf, -np.inf, 0, 0
    for batch in scan_manifest(run_storage, _ACTOR_COLUMNS, batch_rows):
        manifest = batch.to_pandas()
        attempted += int((manifest["status"] != "skipped").sum())
        activity = combine_actor_activity(activity, actor_activity(manifest))
        if "ap_excess" in manifest:
            values = manifest["ap_excess"].dropna()
            if len(values):
                low, high, count = min(low, values.min()), max(high, values.max()), count + len(values)
    return activity, (float(low), float(high), count) if count else (0.0, 0.0, 0), attempted


def _count(counts: dict, manifest: pd.DataFrame) -> None:
    counts["total"] += len(manifest)
    for status, n in manifest["status"].value_counts().items():
        if status in counts:
            counts[status] += int(n)
    for name in _RUN_SUMS:
        counts[name] += manifest[name].fillna(0).sum()
    counts["flagged"] += int((manifest["flagged"] == True).sum())  # noqa: E712 - None and NaN are not flagged
    counts["given_up"] += int(pc.sum(given_up(manifest["status"], manifest["error_class"])).as_py() or 0)
    if "c2pa" in manifest:  # older manifests have none
        for state, n in manifest.loc[manifest["status"] == "ok", "c2pa"].fillna("none").value_counts().items():
            counts["c2pa"][state] = counts["c2pa"].get(state, 0) + int(n)
    if "niqe" in manifest:  # older manifests have none
        niqe = pd.to_numeric(manifest["niqe"], errors="coerce").dropna()
        counts["niqe_sum"] += float(niqe.sum())
        counts["niqe_count"] += len(niqe)


def _summary(run_storage: Storage, record: FinishRecord, counts: dict, cost: dict) -> dict:
    """summary.json (the fields of pipeline.run.backfill.RunSummary)."""
    total = counts["total"] if record.listed is None else record.listed
    return {"run_id": record.run_id, "total": total, "ok": counts["ok"], "failed": counts["failed"],
            "given_up": counts["given_up"], "skipped": counts["skipped"], "seconds": record.seconds,
            "manifest_uri": run_storage.uri_for("summary.json").rsplit("/", 1)[0] + "/manifest/", "summary_uri": run_storage.uri_for("summary.json"),
            "gpu_seconds": float(counts["gpu_seconds"]), "cpu_seconds": float(counts["cpu_seconds"]),
            "bytes_in": int(counts["bytes_in"]), "bytes_out": int(counts["bytes_out"]), "flagged": counts["flagged"],
            "mean_niqe": counts["niqe_sum"] / counts["niqe_count"] if counts["niqe_count"] else None,
            "c2pa": counts["c2pa"], "dry_run": record.dry_run, "cost": cost, "cost_uri": run_storage.uri_for("cost.parquet"),
            "report_uri": run_storage.uri_for("report.html"), "estimate": record.estimate, "stopped": record.stopped,
            **{name: record.pool.get(name, 0) for name in POOL_FIELDS}}


def rebuild_run(open_storage: Callable[[str], Storage], run_uri: str, prices: Prices, threshold: float,
                input_uri: str | None = None) -> dict:
    """`op4ksr report`: redo a run's finish phase from its manifest; returns the new summary.json's dict.

    `open_storage(uri)` opens a uri with the caller's storage settings; `threshold` is report.threshold;
    `input_uri` (the run's input prefix) fills the page's contact sheet, which stays empty without it."""
    run = open_storage(run_uri)
    manifest_parts(run)  # a clear error now if this is no run folder
    output_uri = run.spec.uri.rstrip("/").rsplit("/runs/", 1)[0] + "/"
    outputs = open_storage(output_uri)
    inputs = open_storage(input_uri) if input_uri else outputs
    return finish_run(run, FinishRecord.load(run), prices, threshold, inputs, outputs)
