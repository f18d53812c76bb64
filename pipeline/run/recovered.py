"""The rows a stopped run finished but never received: recovered from their reports.

When a run stops early (Ctrl-C, no actor could start), its actors may have written images and
reports for inputs whose manifest rows never reached the driver (their batches were in flight).
Those inputs are done (a rerun skips them by their report), so without a row they would be
done and never priced. Before the stopped run's finish phase, the due inputs it has no row for
are looked up, in due order, for a report written by this run, and each found becomes its ok
row. Batches run roughly in due order, so only the first RECOVERY_WINDOW (a bound over what can
be in flight) unrecorded inputs are looked up: a stop early in a long run costs a bounded number
of requests, not one per input; an image missed past it is named by `op4ksr compare` as unpriced.
"""
from __future__ import annotations

import hashlib
import json
from array import array

import numpy as np

from pipeline.ledger.manifest_scan import scan_parquet
from pipeline.manifest.layout import report_key
from pipeline.manifest.records import FIELDS
from pipeline.storage import ObjectNotFoundError


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")


class RecordedKeys:
    """64-bit hashes of the keys a run has rows for (8 bytes a key): what it need not recover."""

    def __init__(self) -> None:
        self._hashes = array("Q")

    def add(self, rows: list[dict]) -> None:
        self._hashes.extend(_hash(row["key"]) for row in rows)

    def sorted(self) -> np.ndarray:
        return np.sort(np.frombuffer(self._hashes, dtype=np.uint64)) if len(self._hashes) else np.zeros(0, np.uint64)


def recovery_window(pool) -> int:
    """How many unrecorded due inputs to look up: a generous bound over the batches a pool can hold in flight."""
    return 4 * (pool.fetch_tasks + 2 * pool.max_actors) * pool.batch_size + 64


def rows_from_reports(outputs, run_id: str, recorded: RecordedKeys, window: int) -> list[dict]:
    """Ok rows, from their reports, for due inputs of run `run_id` that this run finished but has no row for."""
    from pipeline.ledger.comparison import run_storage

    done = recorded.sorted()
    rows, looked = [], 0
    for batch in scan_parquet(run_storage(outputs, run_id), ["due.parquet"], ["key"]):
        keys = batch.column("key").to_pylist()
        hashes = np.array([_hash(k) for k in keys], dtype=np.uint64)
        for key, known in zip(keys, np.isin(hashes, done)):
            if known:
                continue
            if looked >= window:
                return rows
            looked += 1
            try:
                report = json.loads(outputs.get(report_key(key)))
            except (ObjectNotFoundError, ValueError):
                continue
            if report.get("run_id") == run_id and report.get("status") == "ok":
                rows.append({k: report.get(k) for k in FIELDS})
    return rows

