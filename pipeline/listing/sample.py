"""A deterministic sample of a catalog, stratified by file format and size (`op4ksr compare`).

The same listing and N give the same sample on any machine: inputs are grouped into strata by
extension and byte-size band (powers of 4 from 64 KiB: the pixel size is unknown until an image
is decoded, and bytes follow it within a format), each stratum gets a share of N in proportion
to its count (largest remainders; every stratum at least one while N allows), and within a
stratum the inputs with the smallest SHA-256 of their key are taken. The listing is streamed:
memory is N keys per stratum, whatever the catalog's length.
"""
from __future__ import annotations

import hashlib
import heapq
import math
import posixpath
from collections import Counter
from typing import Iterable

from pipeline.storage import ObjectInfo

SMALLEST_BAND_BYTES = 64 * 1024


def stratum(obj: ObjectInfo) -> tuple[str, int]:
    """(lower-case extension, size band): band 0 below 64 KiB, then one band per factor of 4."""
    extension = posixpath.splitext(obj.key)[1].lower()
    band = 0 if obj.size < SMALLEST_BAND_BYTES else 1 + int(math.log(obj.size / SMALLEST_BAND_BYTES, 4))
    return extension, band


def _rank(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def allocate(counts: dict, n: int) -> dict:
    """Each stratum's share of n (stratum -> share): proportional to its count, largest remainders
    first; then, while n is at least the number of strata, every empty stratum takes one from the
    largest share."""
    total = sum(counts.values())
    if n >= total:
        return dict(counts)
    order = sorted(counts)  # a fixed order, so ties break the same way every time
    exact = {s: n * counts[s] / total for s in order}
    shares = {s: int(exact[s]) for s in order}
    for s in sorted(order, key=lambda s: (-(exact[s] - shares[s]), s))[:n - sum(shares.values())]:
        shares[s] += 1
    if n >= len(order):
        for s in [s for s in order if shares[s] == 0]:
            shares[max(order, key=lambda t: (shares[t], t))] -= 1
            shares[s] = 1
    return shares


def stratified_sample(objects: Iterable[ObjectInfo], n: int) -> list[ObjectInfo]:
    """N inputs of `objects` (all of them when there are fewer), stratified as above, in key order."""
    if n < 1:
        raise ValueError(f"sample size {n} must be at least 1")
    counts: Counter = Counter()
    smallest: dict[tuple, list] = {}  # stratum -> heap of (-rank, key, obj): its n smallest ranks
    for obj in objects:
        group = stratum(obj)
        counts[group] += 1
        heap = smallest.setdefault(group, [])
        item = (_Desc(_rank(obj.key)), obj.key, obj)
        if len(heap) < n:
            heapq.heappush(heap, item)
        elif item[0] > heap[0][0]:
            heapq.heapreplace(heap, item)
    shares = allocate(dict(counts), n)
    chosen = []
    for group, heap in smallest.items():
        ranked = sorted(heap, key=lambda item: item[0].rank)
        chosen += [obj for _, _, obj in ranked[:shares[group]]]
    return sorted(chosen, key=lambda obj: obj.key)


class _Desc:
    """A rank ordered backwards, so a min-heap keeps the n smallest ranks with the largest on top."""

    __slots__ = ("rank",)

    def __init__(self, rank: str):
        self.rank = rank

    def __lt__(self, other: _Desc) -> bool:
        return self.rank > other.rank

    def __gt__(self, other: _Desc) -> bool:
        return self.rank < other.rank

    def __eq__(self, other) -> bool:
        return isinstance(other, _Desc) and self.rank == other.rank
