"""Who owns each output that earlier runs wrote: so that a new input never overwrites another's image.

A listing sees only the keys it lists: with `--since last`, a new `a.png` is listed alone and
would overwrite `images/a.png`, the output of `a.jpg` done by an earlier run. Earlier runs'
`ok` and `skipped` manifest rows (any model, any parameters: an image is an image) say which
input wrote each output key; they claim their outputs before the listing does (op4ksr.images.output_names),
so a listed input whose output another input wrote earlier fails as a collision.

Per output: a 128-bit hash of the output key and a 64-bit hash of the input key that wrote it
(24 bytes; 240 MB at 10 M outputs), sorted and deduplicated. The owner's name is not kept: it
is found again among the output's stem with each listed extension, and said generically when
it is not one of those.
"""
from __future__ import annotations

import posixpath

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.manifest.layout import IMAGES

_HASH_KEYS = ("op4ksr-out-hi-01", "op4ksr-out-lo-02", "op4ksr-owner-003")  # 16-byte SipHash keys
UNNAMED_OWNER = "an input done by an earlier run"


def _hash(values, key: str) -> np.ndarray:
    array = np.asarray(values.to_numpy(zero_copy_only=False) if isinstance(values, pa.Array) else values, dtype=object)
    return pd.util.hash_array(array, hash_key=key, categorize=False)


class OutputOwners:
    """The output keys earlier runs wrote, each with (a hash of) the input key that wrote it."""

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None):
        """From (hi, lo, owner) parts (OutputOwners.hashes of manifest batches; emptied as they are used)."""
        parts = parts if parts is not None else []
        columns = []
        for column in range(3):  # one column at a time, dropping the parts' copies, to bound the peak
            columns.append(np.concatenate([p[column] for p in parts]) if parts else np.zeros(0, np.uint64))
            parts[:] = [tuple(None if c == column else p[c] for c in range(3)) for p in parts]
        parts.clear()
        hi, lo, owner = columns
        del columns
        order = np.lexsort((owner, lo, hi))  # sorted by (hi, lo, owner), one column copied at a time
        hi = hi[order]
        lo = lo[order]
        owner = owner[order]
        del order
        new = np.ones(len(hi), bool)  # each (output, owner) pair once: earlier runs repeat them
        new[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1]) | (owner[1:] != owner[:-1])
        self.hi, self.lo, self.owner = hi[new], lo[new], owner[new]

    def __len__(self) -> int:
        return len(self.hi)

    @staticmethod
    def hashes(batch: pa.RecordBatch | pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(hi, lo, owner) of a manifest batch's (key, status, output_key) rows whose output exists:
        ok, or skipped as done (by the done-index or by the report an image leaves)."""
        wrote = pc.fill_null(pc.and_kleene(pc.is_in(batch["status"], pa.array(["ok", "skipped"])),
                                           pc.is_valid(batch["output_key"])), False)
        outputs, keys = pc.filter(batch["output_key"], wrote), pc.filter(batch["key"], wrote)
        return _hash(outputs, _HASH_KEYS[0]), _hash(outputs, _HASH_KEYS[1]), _hash(keys, _HASH_KEYS[2])

    def owners_of(self, output_keys: list[str], keys: list[str], extensions=()) -> list[str | None]:
        """For each listed (output key, input key): the earlier input that owns that output if it is
        another one (named when it is the output's stem with one of `extensions`), else None."""
        owners: list[str | None] = [None] * len(keys)
        if not len(self) or not keys:
            return owners
        hi, lo, mine = _hash(output_keys, _HASH_KEYS[0]), _hash(output_keys, _HASH_KEYS[1]), _hash(keys, _HASH_KEYS[2])
        left, right = np.searchsorted(self.hi, hi, "left"), np.searchsorted(self.hi, hi, "right")
        first = np.minimum(left, len(self) - 1)
        # the common case, one earlier row for this output: compared for the whole batch at once
        clash = (right - left == 1) & (self.lo[first] == lo) & (self.owner[first] != mine)
        for i in np.flatnonzero(clash):
            owners[i] = self._name(output_keys[i], self.owner[first[i]], extensions)
        for i in np.flatnonzero(right - left > 1):  # several earlier writers (or a 64-bit tie): look closer
            same = np.flatnonzero(self.lo[left[i]:right[i]] == lo[i]) + left[i]
            if len(same) and not (self.owner[same] == mine[i]).any():
                owners[i] = self._name(output_keys[i], self.owner[same[0]], extensions)
        return owners

    @staticmethod
    def _name(output_key: str, owner: np.uint64, extensions) -> str:
        stem, _ = posixpath.splitext(output_key[len(IMAGES):] if output_key.startswith(IMAGES) else output_key)
        candidates = [stem + ext for e in extensions for ext in dict.fromkeys((e, e.upper()))]
        if candidates:
            found = np.flatnonzero(_hash(candidates, _HASH_KEYS[2]) == owner)
            if len(found):
                return candidates[found[0]]
        return UNNAMED_OWNER
