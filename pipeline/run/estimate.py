"""The dry run's estimate: how many listed inputs are due, and what they would cost.

Nothing is processed. The inputs the done-index (pipeline/listing/done_index.py) proves done are not
due; for the rest (runs/<id>/due.parquet) each report is read (in parallel, a bounded batch at
a time) to decide whether it is done; the price per image comes from the most recent finished
run under the same output prefix, because on a new model or card nothing else is honest.
"""
from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

import pyarrow.parquet as pq

from pipeline.manifest.layout import report_key
from pipeline.ledger.manifest_scan import runs_storage
from pipeline.manifest.records import is_done
from pipeline.storage import ObjectNotFoundError, StorageError

BATCH_ROWS = 1000


def count_due(outputs, inputs_key: str, model_id: str, params_hash: str, threads: int = 16) -> int:
    """How many rows of an input list (runs/<id>/due.parquet: what the done-index did not cover) have no
    matching report yet."""
    table = pq.ParquetFile(io.BytesIO(outputs.get(inputs_key)))

    def done(row: dict) -> bool:
        try:
            report = json.loads(outputs.get(report_key(row["key"])))
        except (ObjectNotFoundError, ValueError):
            return False
        return is_done(report, row["etag"], model_id, params_hash)

    due = 0
    with ThreadPoolExecutor(threads) as pool:
        for batch in table.iter_batches(batch_size=BATCH_ROWS, columns=["key", "etag"]):
            due += sum(not d for d in pool.map(done, batch.to_pylist()))
    return due


def last_cost_per_image(outputs, exclude_run: str) -> tuple[float | None, str | None]:
    """(USD per delivered image, run id) of the newest finished run with delivered images, else (None, None)."""
    runs = runs_storage(outputs)  # listing runs/ alone: the images and reports may be millions of keys
    summaries = [] if runs is None else sorted(
        (o.key for o in runs.iter_objects() if o.key.endswith("/summary.json") and not o.key.startswith(f"{exclude_run}/")),
        reverse=True)
    for key in summaries:
        try:
            summary = json.loads(runs.get(key))
        except (StorageError, ValueError):
            continue
        total_usd = (summary.get("cost") or {}).get("total_usd")
        if summary.get("ok") and total_usd is not None and not summary.get("dry_run"):
            return total_usd / summary["ok"], summary.get("run_id")
    return None, None


def dry_run_estimate(outputs, inputs_key: str, run_id: str, model_id: str, params_hash: str) -> dict:
    """{"due", "usd_per_image", "estimated_usd", "basis_run"} for a dry run."""
    due = count_due(outputs, inputs_key, model_id, params_hash)
    per_image, basis = last_cost_per_image(outputs, run_id)
    return {"due": due, "usd_per_image": per_image, "basis_run": basis,
            "estimated_usd": None if per_image is None else due * per_image}
