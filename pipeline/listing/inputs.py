"""The run's input list: a streaming listing of the input prefix, saved as `inputs.parquet`.

Nothing here holds the whole catalog: listing yields one S3 page at a time and the Parquet
writer receives bounded batches, so a million keys cost the same memory as ten thousand. Past
its first FAN_OUT_AFTER_KEYS keys a listing goes on with one thread per top-level folder
(pipeline/listing/fanout.py), in the same order.

Two inputs can name the same output (`a.jpg` and `a.png` both become `images/a.png` when the
extension is replaced). The listing marks the later one with the key it `collides_with`, so
the fetch stage fails it with a clear error instead of letting it overwrite the first image.
Keys are listed in order and such pairs sit close together, so a bounded window of recent
output keys finds them (COLLISION_WINDOW keys apart at most). Outputs that earlier runs wrote
are claimed by their inputs first, whatever this listing holds (pipeline/listing/output_owners.py).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import tempfile
from typing import Callable, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from op4ksr.images.output_names import OutputClaims
from pipeline.listing.fanout import iter_fanned_out
from pipeline.listing.output_owners import UNNAMED_OWNER
from pipeline.listing.read_only import without_prefixes
from op4ksr.errors import UserError
from pipeline.storage import ObjectInfo, Storage, StorageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif")

INPUTS_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("size", pa.int64()),
        ("etag", pa.string()),
        ("last_modified", pa.timestamp("us", tz="UTC")),
        ("collides_with", pa.string()),  # the earlier input key with the same output key (null: none)
    ]
)
COLLISION_WINDOW = 10_000
LISTING_WORKERS = 8  # folders listed at once once a listing is large
FAN_OUT_AFTER_KEYS = 10_000  # keys listed sequentially before fanning out (ten pages: a small catalog never fans out)
# (output keys, their input keys) -> for each, the earlier run's input that wrote that output, if another
EarlierOwners = Callable[[list[str], list[str]], list["str | None"]]
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_MICROSECOND = dt.timedelta(microseconds=1)


class InputUnreadable(UserError):
    """input.uri cannot be listed: no such folder or bucket, refused credentials, an unreachable endpoint."""


def check_listable(storage: Storage, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> None:
    """InputUnreadable, in one line, when `storage` cannot be listed (one page is read): before a run writes anything."""
    try:
        next(iter(storage.iter_objects(extensions=extensions)), None)
    except StorageError as err:
        raise InputUnreadable(f"input.uri={storage.spec.uri}: {err}") from None


def list_inputs(
    storage: Storage,
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    limit: int | None = None,
    since: dt.datetime | None = None,
    workers: int = LISTING_WORKERS,
    fan_out_after: int = FAN_OUT_AFTER_KEYS,
    exclude: tuple[str, ...] = (),
) -> Iterator[ObjectInfo]:
    """Input objects with one of `extensions`, in key order, at most `limit` of them.

    `since` keeps objects modified after it. S3 has no server-side filter on time, so the
    listing still walks the whole prefix; only what is kept is written and processed. A listing
    that goes on past `fan_out_after` keys lists the rest with `workers` threads, one per
    folder (pipeline/listing/fanout.py); the order and the keys are the same. Keys under any of
    `exclude` (output locations inside the input: pipeline/listing/read_only.py) are never listed.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be 0 or more (None: no limit)")
    objects = without_prefixes(_fanned_out(storage, extensions, workers, fan_out_after), tuple(exclude))
    if since is not None:
        objects = (o for o in objects if o.last_modified > since)
    return objects if limit is None else itertools.islice(objects, limit)


def _fanned_out(storage: Storage, extensions, workers: int, fan_out_after: int) -> Iterator[ObjectInfo]:
    """The sequential listing for its first `fan_out_after` keys, then the rest fanned out (workers > 1)."""
    if workers <= 1:
        yield from storage.iter_objects(extensions=extensions)
        return
    last = None
    if fan_out_after > 0:
        for count, obj in enumerate(storage.iter_objects(extensions=extensions), 1):
            yield obj
            last = obj.key
            if count >= fan_out_after:
                break
        else:
            return  # a small catalog: done with one sequential listing
    yield from iter_fanned_out(storage, extensions, workers, start_after=last)


def write_inputs_parquet(
    objects: Iterable[ObjectInfo], storage: Storage, key: str, batch_rows: int = 10_000,
    output_key: Callable[[str], str] | None = None, on_batch: Callable[[pa.RecordBatch], None] | None = None,
    earlier_owners: EarlierOwners | None = None,
) -> int:
    """Stream `objects` to a Parquet file at `key` in `storage` (INPUTS_SCHEMA); returns the row count.

    At most `batch_rows` rows are held at once. The file is built on local disk and uploaded
    whole, so a half-written inputs.parquet never appears in storage. With `output_key` (input
    key -> output key), rows whose output an earlier row already claims get `collides_with`, and so
    do rows whose output `earlier_owners` (output keys, input keys -> owners) says another input
    wrote in an earlier run (pipeline/listing/output_owners.py).
    `on_batch` sees each record batch as it is written (pipeline/listing/done_index.py's DueSplit).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows={batch_rows} must be at least 1")
    collisions = _Collisions(output_key, earlier_owners) if output_key else None
    fd, path = tempfile.mkstemp(prefix="op4ksr-inputs-", suffix=".parquet")
    os.close(fd)
    try:
        rows = 0
        with pq.ParquetWriter(path, INPUTS_SCHEMA) as writer:
            for batch in _batches(objects, batch_rows):
                collides = collisions.check(batch) if collisions else [None] * len(batch)
                record_batch = _to_record_batch(batch, collides)
                writer.write_batch(record_batch)
                if on_batch is not None:
                    on_batch(record_batch)
                rows += len(batch)
        storage.put_file(key, path, content_type="application/vnd.apache.parquet")
        return rows
    finally:
        os.remove(path)


class _Collisions:
    """Which input owns each output key (op4ksr.images.output_names): earlier runs' inputs claim
    theirs first (`earlier`), then listed keys in order; the last COLLISION_WINDOW keys are remembered."""

    def __init__(self, output_key: Callable[[str], str], earlier: EarlierOwners | None = None):
        self.output_key, self.earlier = output_key, earlier
        self.claims = OutputClaims(window=COLLISION_WINDOW)
        self.done_earlier: set[str] = set()  # owners seen in earlier runs' manifests (named in the error)

    def check(self, objects: list[ObjectInfo]) -> list[str | None]:
        """For each object, the input key whose output it would overwrite, or None."""
        keys = [obj.key for obj in objects]
        outputs = [self._output(key) for key in keys]
        named = [i for i, out in enumerate(outputs) if out is not None]
        earlier = [None] * len(keys)
        if self.earlier is not None and named:
            for i, owner in zip(named, self.earlier([outputs[i] for i in named], [keys[i] for i in named])):
                earlier[i] = owner
        collides = []
        for key, out, owner in zip(keys, outputs, earlier):
            if out is not None and owner is not None:
                self.claims.claim(out, owner)  # an earlier run wrote it: that input claims it first
                self.done_earlier.add(owner)
            first = None if out is None else self.claims.claim(out, key)
            collides.append(f"{first} (done by an earlier run)" if first in self.done_earlier and first != UNNAMED_OWNER
                            else first)
        return collides

    def _output(self, key: str) -> str | None:
        try:
            return self.output_key(key)
        except ValueError:  # an unsafe key: the fetch stage fails it on its own
            return None


def _batches(objects: Iterable[ObjectInfo], size: int) -> Iterator[list[ObjectInfo]]:
    iterator = iter(objects)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _to_record_batch(batch: list[ObjectInfo], collides: list[str | None]) -> pa.RecordBatch:
    return pa.record_batch(
        [
            pa.array([o.key for o in batch], pa.string()),
            pa.array([o.size for o in batch], pa.int64()),
            pa.array([o.etag for o in batch], pa.string()),
            # Integer microseconds: several times faster than converting datetimes one by one.
            pa.array([(o.last_modified - _EPOCH) // _MICROSECOND for o in batch], pa.int64()).cast(
                INPUTS_SCHEMA.field("last_modified").type
            ),
            pa.array(collides, pa.string()),
        ],
        schema=INPUTS_SCHEMA,
    )
