"""The comparison's sample (pipeline/listing/sample.py): deterministic, stratified by format and size."""
import datetime as dt
import random
from collections import Counter

import pytest

from pipeline.listing.sample import allocate, stratified_sample, stratum
from pipeline.storage import ObjectInfo

T = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def _catalog():
    """600 JPEGs of ~200 KB, 300 PNGs of ~5 MB and 100 TIFFs of ~40 MB, keys shuffled."""
    objects = [ObjectInfo(f"scans/{i:04d}.jpg", 200_000 + i, f"e{i}", T) for i in range(600)]
    objects += [ObjectInfo(f"masters/{i:04d}.png", 5_000_000 + i, f"p{i}", T) for i in range(300)]
    objects += [ObjectInfo(f"raw/{i:04d}.TIF", 40_000_000 + i, f"t{i}", T) for i in range(100)]
    return objects


def test_the_same_catalog_and_n_give_the_same_sample_in_any_listing_order():
    objects = _catalog()
    first = stratified_sample(objects, 20)
    shuffled = objects[:]
    random.Random(3).shuffle(shuffled)
    assert [o.key for o in stratified_sample(shuffled, 20)] == [o.key for o in first]
    assert len(first) == 20 and [o.key for o in first] == sorted(o.key for o in first)


def test_each_format_and_size_band_gets_its_share():
    sample = stratified_sample(_catalog(), 20)
    counts = Counter(stratum(o)[0] for o in sample)
    assert counts == {".jpg": 12, ".png": 6, ".tif": 2}  # 60% / 30% / 10% of the catalog
    # a small stratum still gets one input when N allows
    rare = _catalog() + [ObjectInfo("odd/one.webp", 10_000, "w", T)]
    assert any(o.key == "odd/one.webp" for o in stratified_sample(rare, 10))


def test_size_bands_split_one_format_by_bytes():
    assert stratum(ObjectInfo("a.png", 10_000, "", T)) == (".png", 0)
    assert stratum(ObjectInfo("a.png", 100_000, "", T)) == (".png", 1)
    assert stratum(ObjectInfo("a.png", 5_000_000, "", T)) == (".png", 4)
    small = [ObjectInfo(f"s{i}.png", 30_000, "", T) for i in range(50)]
    large = [ObjectInfo(f"l{i}.png", 8_000_000, "", T) for i in range(50)]
    sample = stratified_sample(small + large, 10)
    assert Counter(stratum(o)[1] for o in sample) == {0: 5, 4: 5}


def test_allocation_is_proportional_and_never_exceeds_a_stratum():
    assert allocate({"a": 3, "b": 1}, 10) == {"a": 3, "b": 1}  # fewer inputs than N: all of them
    shares = allocate({"a": 97, "b": 2, "c": 1}, 10)
    assert sum(shares.values()) == 10 and shares["c"] == 1 and shares["b"] >= 1
    assert allocate({"a": 5, "b": 5, "c": 5}, 2) == {"a": 1, "b": 1, "c": 0}  # fewer than strata: remainders
    with pytest.raises(ValueError):
        stratified_sample(_catalog(), 0)
