"""Reading a run's Parquet (manifest parts, cost.parquet) a record batch at a time, whatever its size.

Why pyarrow's Parquet reader and not DuckDB or a whole DataFrame: everything after the images
is a handful of sums and small top-N lists over a few columns (pipeline/ledger/finish.py), which a
single streamed pass computes with a batch in memory; pyarrow is already a dependency, reads
only the columns asked for, and needs nothing at run time (DuckDB would be a new 50 MB
dependency whose S3 support is an extension downloaded on first use, and our runs have no
network but the object store). A part in S3 is copied to a local temp file first, so memory
holds one batch, never one object.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from op4ksr.errors import UserError
from pipeline.manifest.layout import RUNS
from pipeline.storage import Storage

MANIFEST_FOLDER = "manifest/"
BATCH_ROWS = 65_536


def runs_storage(outputs: Storage) -> Storage | None:
    """The output prefix's runs/ folder as a storage (listing it lists no image or report), or None if there is none."""
    runs = outputs.child(RUNS)
    if not runs.spec.is_s3 and not os.path.isdir(runs.spec.uri):
        return None
    return runs


def manifest_parts(run_storage: Storage) -> list[str]:
    """The keys of the run's manifest parts (manifest/part-*.parquet), in order; ValueError if there are none."""
    parts = sorted(o.key for o in run_storage.iter_objects(extensions=[".parquet"])
                   if o.key.startswith(MANIFEST_FOLDER))
    if not parts:
        raise UserError(f"{run_storage.spec.uri}: no manifest parts; is this a run folder (runs/<id>/)?")
    return parts


@contextlib.contextmanager
def local_copy(storage: Storage, key: str) -> Iterator[str]:
    """A local path holding the object: the file itself for a folder, a temp copy (removed after) for S3."""
    if not storage.spec.is_s3:
        yield storage.uri_for(key)
        return
    fd, path = tempfile.mkstemp(prefix="op4ksr-scan-", suffix=".parquet")
    os.close(fd)
    try:
        storage.get_file(key, path)
        yield path
    finally:
        os.remove(path)


def open_parquet(path: str) -> pq.ParquetFile:
    """A Parquet file read through a 1 MiB buffer: with pyarrow's defaults (column chunks read whole
    and pre-buffered) RSS grew with the file, by 200 MB over a 105 MB cost.parquet (measured)."""
    return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)


def scan_parquet(storage: Storage, keys: Iterable[str], columns: Iterable[str] | None = None,
                 batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """Batches of `batch_rows` rows (the last may be shorter) of the Parquet objects `keys`, in order,
    with those of `columns` each has.

    Rows of small objects are gathered into full batches: what reads a batch pays a fixed cost per
    batch (pandas, about 0.15 s in the finish phase), so a long run's thousands of 1,000-row parts
    must not each be a batch of their own."""
    pending, rows = [], 0
    for batch in _object_batches(storage, keys, columns, batch_rows):
        pending.append(batch)
        rows += batch.num_rows
        while rows >= batch_rows:
            joined = _joined(pending)
            yield joined.slice(0, batch_rows)
            rest = joined.slice(batch_rows)
            pending, rows = [rest], rest.num_rows
    if rows:
        yield _joined(pending)


def _object_batches(storage: Storage, keys: Iterable[str], columns: Iterable[str] | None,
                    batch_rows: int) -> Iterator[pa.RecordBatch]:
    wanted = None if columns is None else list(columns)
    for key in keys:
        with local_copy(storage, key) as path:
            reader = open_parquet(path)
            names = reader.schema_arrow.names
            present = None if wanted is None else [c for c in wanted if c in names]
            yield from reader.iter_batches(batch_size=batch_rows, columns=present)


def _joined(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    """One record batch of `batches`' rows; parts of older runs may lack columns (they come back empty)."""
    if len(batches) == 1:
        return batches[0]
    table = pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="default")
    return pa.RecordBatch.from_arrays([column.combine_chunks() for column in table.columns], schema=table.schema)


def scan_manifest(run_storage: Storage, columns: Iterable[str] | None = None,
                  batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The run's manifest rows, a record batch at a time, in part order."""
    return scan_parquet(run_storage, manifest_parts(run_storage), columns, batch_rows)
