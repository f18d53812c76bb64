"""Skip what is done without one request per input: an index of the ok rows of earlier runs' manifests.

Before any fetch, the listing is joined with the `ok` manifest rows of every earlier run under
the output prefix that used the same model id and params hash: an input whose (key, etag) is
there is done and gets its `skipped` row from the driver, with no request and no trip through
Ray. Only the rest goes to the dataset (runs/<id>/due.parquet), where the fetch stage's report
check stays the fallback for what the index does not cover (runs whose manifest was lost, images
done by another tool), so exactly-once is unchanged: an ok manifest row is written only after
the image and then its report were uploaded, just as a report implies a whole image.

The index holds a 128-bit hash of key + etag per done input (16 bytes; 160 MB at 10 M inputs),
sorted, and a listing batch is looked up with a binary search. Two different inputs sharing all
128 bits is what would skip an image wrongly; at 10 M inputs the odds are about 1 in 10^24.
"""
from __future__ import annotations

import os
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.manifest.layout import output_image_key
from pipeline.ledger.manifest_scan import runs_storage, scan_parquet
from pipeline.listing.output_owners import OutputOwners
from pipeline.manifest.records import WorkerDiedError, failed, given_up, new_record
from pipeline.storage import Storage

INDEX_COLUMNS = ["key", "status", "error_class", "input_etag", "model_id", "params_hash", "output_key"]
_HASH_KEYS = ("op4ksr-done-hi-1", "op4ksr-done-lo-2")  # two 16-byte SipHash keys: 2 x 64 bits


class DoneIndex:
    """The (key, etag) pairs that earlier runs finished with one model id and params hash."""

    def __init__(self, hi: np.ndarray, lo: np.ndarray, owners: OutputOwners | None = None):
        order = np.lexsort((lo, hi))
        self.hi, self.lo = hi[order], lo[order]  # (N,) uint64 each, sorted by (hi, lo)
        self.owners = owners if owners is not None else OutputOwners()  # every earlier run's outputs, any model

    def __len__(self) -> int:
        return len(self.hi)

    @classmethod
    def build(cls, outputs: Storage, model_id: str, params_hash: str, exclude_run: str = "") -> DoneIndex:
        """The index of every run's manifest under `outputs`' runs/ (but `exclude_run`'s), with the
        owners of every output those runs wrote (pipeline/listing/output_owners.py)."""
        return cls.build_with_given_up(outputs, model_id, params_hash, exclude_run)[0]

    @classmethod
    def build_with_given_up(cls, outputs: Storage, model_id: str, params_hash: str,
                            exclude_run: str = "") -> tuple[DoneIndex, DoneIndex]:
        """(done, given up), read in one pass: the ok rows (with the owners of every output earlier runs
        wrote), and the rows an earlier run gave up on because the input killed the model actor's
        process every time (pipeline/fleet/attempts.py)."""
        found = {"done": ([], []), "given_up": ([], [])}
        owned = []
        runs = runs_storage(outputs)
        parts = [] if runs is None else sorted(
            o.key for o in runs.iter_objects(extensions=[".parquet"])
            if "/manifest/" in o.key and not o.key.startswith(f"{exclude_run}/"))
        for batch in scan_parquet(runs, parts, INDEX_COLUMNS) if parts else ():
            owned.append(OutputOwners.hashes(batch))
            same = pc.and_kleene(pc.equal(batch["model_id"], model_id), pc.equal(batch["params_hash"], params_hash))
            gave_up = given_up(batch["status"], batch["error_class"])
            for name, rows in (("done", pc.equal(batch["status"], "ok")), ("given_up", gave_up)):
                rows = pc.fill_null(pc.and_kleene(rows, same), False)
                if pc.any(rows).as_py():
                    hi, lo = pair_hashes(pc.filter(batch["key"], rows), pc.filter(batch["input_etag"], rows))
                    found[name][0].append(hi)
                    found[name][1].append(lo)
        empty = np.zeros(0, np.uint64)
        (done_hi, done_lo), (gone_hi, gone_lo) = found.values()
        join = lambda parts: np.concatenate(parts) if parts else empty  # noqa: E731
        return (cls(join(done_hi), join(done_lo), OutputOwners(owned)), cls(join(gone_hi), join(gone_lo)))

    def contains(self, keys: pa.Array, etags: pa.Array) -> np.ndarray:
        """(N,) bool: which (key, etag) pairs are done."""
        if not len(self) or not len(keys):
            return np.zeros(len(keys), bool)
        hi, lo = pair_hashes(keys, etags)
        at = np.searchsorted(self.hi, hi)
        found = np.minimum(at, len(self.hi) - 1)
        # Equal `hi` with another `lo` first would miss: a miss only costs the report check.
        return (at < len(self.hi)) & (self.hi[found] == hi) & (self.lo[found] == lo)


def pair_hashes(keys: pa.Array, etags: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    joined = pc.binary_join_element_wise(keys, pc.fill_null(etags, ""), "\x00")
    values = np.asarray(joined.to_numpy(zero_copy_only=False), dtype=object)
    return tuple(pd.util.hash_array(values, hash_key=k, categorize=False) for k in _HASH_KEYS)


class DueSplit:
    """Fed the listing a batch at a time (write_inputs_parquet's `on_batch`): writes the inputs the
    index does not cover to runs/<id>/due.parquet, and hands a `skipped` record for each covered one
    to `on_skipped` (the manifest writer; None in a dry run, which writes no rows)."""

    def __init__(self, index: DoneIndex, storage: Storage, key: str, spec, on_skipped=None,
                 given_up: DoneIndex | None = None):
        self.index, self.storage, self.key, self.spec, self.on_skipped = index, storage, key, spec, on_skipped
        self.given_up_index = given_up  # inputs not retried (run.retry_given_up=false): a failed row each
        self.given_up = 0
        fd, self.path = tempfile.mkstemp(prefix="op4ksr-due-", suffix=".parquet")
        os.close(fd)
        self.writer: pq.ParquetWriter | None = None
        self.due = self.skipped = 0

    def __call__(self, batch: pa.RecordBatch) -> None:
        # An input that collides with another's output always goes on: the fetch stage fails it.
        free = ~batch["collides_with"].is_valid().to_numpy(False)
        done = self.index.contains(batch["key"], batch["etag"]) & free
        given_up = np.zeros(len(done), bool) if self.given_up_index is None else \
            self.given_up_index.contains(batch["key"], batch["etag"]) & free & ~done
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, batch.schema)
        self.writer.write_batch(batch.filter(pa.array(~done & ~given_up)))
        self.due += int((~done & ~given_up).sum())
        self.skipped += int(done.sum())
        self.given_up += int(given_up.sum())
        if done.any() and self.on_skipped is not None:
            self.on_skipped(self._records(batch.filter(pa.array(done))))
        if given_up.any() and self.on_skipped is not None:
            self.on_skipped([failed(record, WorkerDiedError(
                "not retried: its processing killed the model actor's process in every attempt of an earlier run; "
                "set run.retry_given_up=true to try it again")) | {"attempts": 0}
                for record in self._records(batch.filter(pa.array(given_up)), status=None)])

    def _records(self, batch: pa.RecordBatch, status: str | None = "skipped") -> list[dict]:
        spec, now = self.spec, time.time()
        return [new_record(key, spec.run_id, status=status, input_etag=etag, model_id=spec.model_id,
                           params_hash=spec.params_hash, output_key=output_image_key(key, spec.actor.output_format),
                           requests_get=0, started_at=now, t_fetch=0.0, cpu_seconds=0.0)
                for key, etag in zip(batch["key"].to_pylist(), batch["etag"].to_pylist())]

    def close(self, schema: pa.Schema) -> int:
        """Upload due.parquet (`schema`: inputs.parquet's, for an empty listing); returns the due rows."""
        try:
            if self.writer is None:
                self.writer = pq.ParquetWriter(self.path, schema)
            self.writer.close()
            self.storage.put_file(self.key, self.path, "application/vnd.apache.parquet")
        finally:
            os.remove(self.path)
        return self.due
