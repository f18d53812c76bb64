"""The CPU stage before the model: skip what is done, fetch, decode, plan the output size.

One block of rows in, one block of records out, never an exception: a bad input becomes a
`failed` record and the run goes on. Rows of a block are fetched on a few threads so that
object-store latency overlaps decoding. Decoded pixels travel to the actor pickled in
`payload`; nothing else is heavy. Nothing here imports the model, so a fetch worker starts in
about a second and stays small.
"""
from __future__ import annotations

import functools
import json
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from op4ksr.images.codec import decode_image
from op4ksr.sizing import SizePolicy
from op4ksr.images.output_names import collision_error
from pipeline.manifest.layout import output_image_key, report_key
from pipeline.manifest.records import MANIFEST_SCHEMA, failed, is_done, new_record
from pipeline.storage import ObjectNotFoundError, Storage, StorageSpec


# A record block: the manifest's columns with their manifest types, plus the pickled image.
FETCHED_SCHEMA = MANIFEST_SCHEMA.append(pa.field("payload", pa.binary()))


@dataclass(frozen=True)
class FetchContext:
    input: StorageSpec
    output: StorageSpec
    run_id: str
    model_id: str
    params_hash: str
    output_format: str
    size: SizePolicy
    traceparent: str = ""  # the run span's W3C context, copied into every record (pipeline/run/telemetry.py)
    threads: int = 4  # rows of one block fetched at once
    keep_source_bytes: bool = False  # the input's bytes travel to the actor, for its C2PA manifest's parent


@functools.lru_cache(maxsize=8)
def _open(spec: StorageSpec) -> Storage:
    """One storage (one S3 client) per spec per worker process: Ray reuses workers across tasks,
    and a new boto3 client per block would cost more CPU than a small image's decode."""
    return spec.open()


class FetchDecode:
    """`__call__(block of key, etag) -> table of records + payload`; Ray runs it as CPU tasks."""

    def __init__(self, ctx: FetchContext):
        self.ctx = ctx

    def __call__(self, batch: pa.Table) -> pa.Table:
        """A block of input rows (key, etag, collides_with: inputs.parquet's columns) -> records."""
        rows = batch.to_pylist()
        with ThreadPoolExecutor(max(1, min(self.ctx.threads, len(rows))), thread_name_prefix="fetch") as pool:
            records = list(pool.map(self.fetch_one, rows))
        return pa.Table.from_pylist(records, schema=FETCHED_SCHEMA)

    def fetch_one(self, row: dict) -> dict:
        """The record (+ payload) of one input row {key, etag[, collides_with]}."""
        ctx = self.ctx
        inputs, outputs = _open(ctx.input), _open(ctx.output)
        cpu0 = time.thread_time()
        record = new_record(row["key"], ctx.run_id, input_etag=row["etag"], model_id=ctx.model_id,
                            params_hash=ctx.params_hash, traceparent=ctx.traceparent or None, started_at=time.time())
        payload, cpu_fetched = None, None
        try:
            output_key = output_image_key(row["key"], ctx.output_format)
            if row.get("collides_with"):  # that output is the other input's: this row writes nothing
                raise collision_error(output_key, row["collides_with"])
            record["output_key"] = output_key
            record["requests_get"] = 1
            start = time.perf_counter()  # t_fetch: both GETs, the done check's and the input's
            if is_done(_read_report(outputs, report_key(row["key"])), row["etag"], ctx.model_id, ctx.params_hash):
                record.update(status="skipped", t_fetch=time.perf_counter() - start)
            else:
                record["requests_get"] = 2
                data = inputs.get(row["key"])
                record.update(t_fetch=time.perf_counter() - start, bytes_in=len(data))
                cpu_fetched = time.thread_time()
                start = time.perf_counter()
                image = decode_image(data, max_pixels=ctx.size.max_input_pixels)
                height, width = ctx.size.plan(*image.size)
                image.source_bytes = data if ctx.keep_source_bytes else None
                payload = pickle.dumps(image, protocol=pickle.HIGHEST_PROTOCOL)
                record.update(t_decode=time.perf_counter() - start, input_size=f"{image.size[1]}x{image.size[0]}",
                              output_size=f"{width}x{height}")
        except Exception as err:  # noqa: BLE001 - a bad input is a failed row, not a failed run
            failed(record, err)
            record["output_key"] = record["output_key"] or None
        cpu_end = time.thread_time()
        record.update(cpu_seconds=cpu_end - cpu0, cpu_fetch_seconds=(cpu_fetched or cpu_end) - cpu0,
                      cpu_decode_seconds=None if cpu_fetched is None else cpu_end - cpu_fetched)
        return {**record, "payload": payload}


def _read_report(storage, key: str) -> dict | None:
    try:
        return json.loads(storage.get(key))
    except ObjectNotFoundError:
        return None
    except ValueError:
        return None  # a torn or foreign report proves nothing: redo the image
