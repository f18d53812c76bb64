"""Load: driver memory over a backfill of N small images, and listing a million keys; prints JSON.

usage:
  python bench/load.py images --counts 200,2000     # embedded S3 + tiny model, one child process per count
  python bench/load.py listing --keys 100000,1000000 # synthetic listing -> inputs.parquet, one child per size
  python bench/load.py all                           # both, with the defaults above

Each measurement runs in a fresh child process, so its peak RSS (ru_maxrss) is its own. The
driver is this process only: Ray's raylet/GCS, the workers and the moto server are other
processes and are not counted (the workers' memory does not grow with the catalog either,
but that is Ray's to bound). Memory "flat" means the driver's peak RSS at 2,000 images is
within a few MB of its peak at 200; the RSS samples show it does not climb during the run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

INPUT_SIDE = 16  # px: outputs are 64x64 at the default scale 4


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    """Samples this process's RSS every `every` seconds in a thread; `samples` is [(t, MB)]."""

    def __init__(self, every: float = 1.0):
        self.every, self.samples, self._stop = every, [], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - start, _rss_mb()))
            self._stop.wait(self.every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _small_png(i: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(i)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (INPUT_SIDE, INPUT_SIDE, 3), dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def measure_images(count: int, batch_size: int) -> dict:
    """One backfill of `count` small images through the embedded setup (configs/demo.yaml)."""
    from jobs.config import load_config
    from actors.upscaler import UpscaleActor
    from pipeline.run.backfill import run_backfill
    from jobs.session import run_session

    cfg = load_config(["demo"], [f"run.id=load-{count}", f"actors.batch_size={batch_size}",
                                  "actors.warmup_shapes=[[64,64]]", "pipeline.ray_num_cpus=4"])
    baseline = _rss_mb()
    with run_session(cfg) as (spec, server):
        store = server.open_storage(cfg.input.uri)
        for i in range(count):
            store.put(f"load/{i // 100:03d}/img-{i:05d}.png", _small_png(i))
        before_run = _rss_mb()
        start = time.perf_counter()
        with RssSampler() as sampler:
            summary = run_backfill(spec, UpscaleActor)
        seconds = time.perf_counter() - start
    rss = [mb for _, mb in sampler.samples]
    tail = rss[len(rss) // 2:] or rss
    return {"images": count, "ok": summary.ok, "failed": summary.failed, "seconds": round(seconds, 1),
            "images_per_second": round(count / seconds, 2), "batch_size": batch_size,
            "driver_rss_mb_after_imports": round(baseline, 1), "driver_rss_mb_before_run": round(before_run, 1),
            "driver_rss_mb_max_sampled": round(max(rss), 1),
            "driver_rss_mb_mean_first_half": round(sum(rss[:len(rss) // 2] or rss) / max(1, len(rss) // 2), 1),
            "driver_rss_mb_mean_second_half": round(sum(tail) / len(tail), 1),
            "driver_peak_rss_mb": round(_peak_rss_mb(), 1)}


def synthetic_storage(total: int, page: int = 1000):
    """A Storage whose listing yields `total` generated keys one page at a time, as S3 pages do."""
    from pipeline.storage import ObjectInfo, normalise_extensions

    epoch = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)

    class SyntheticListing:  # list_inputs needs only iter_objects
        def iter_objects(self, extensions=None, start_after=None):
            exts = normalise_extensions(extensions)
            for first in range(0, total, page):
                objects = [ObjectInfo(f"catalog/{i // 1000:05d}/scan {i:08d}.{'jpg' if i % 7 else 'txt'}",
                                      1000 + i, f"{i:032x}", epoch + dt.timedelta(seconds=i))
                           for i in range(first, min(total, first + page))]
                yield from (o for o in objects if (exts is None or o.key.lower().endswith(exts))
                            and (start_after is None or o.key > start_after))

    return SyntheticListing()


def measure_listing(keys: int) -> dict:
    """List `keys` generated keys through list_inputs -> write_inputs_parquet to a local folder."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.listing.inputs import list_inputs, write_inputs_parquet
    from pipeline.storage import open_storage

    with tempfile.TemporaryDirectory(prefix="op4ksr-load-") as folder:
        out = open_storage(folder)
        write_inputs_parquet(list_inputs(synthetic_storage(10), workers=1), out, "warmup.parquet")  # imports out of the peak
        arrow_pool = pa.proxy_memory_pool(pa.default_memory_pool())
        previous = pa.default_memory_pool()
        pa.set_memory_pool(arrow_pool)
        before = _rss_mb()
        tracemalloc.start()
        start = time.perf_counter()
        try:
            rows = write_inputs_parquet(list_inputs(synthetic_storage(keys), workers=1), out, "inputs.parquet")
            python_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            pa.set_memory_pool(previous)
        seconds = time.perf_counter() - start
        file_rows = pq.ParquetFile(os.path.join(folder, "inputs.parquet")).metadata.num_rows
        size_mb = os.path.getsize(os.path.join(folder, "inputs.parquet")) / 2**20
    return {"keys_generated": keys, "inputs_listed": rows, "rows_in_file": file_rows, "seconds": round(seconds, 1),
            "python_peak_mb": round(python_peak / 2**20, 2), "arrow_peak_mb": round(arrow_pool.max_memory() / 2**20, 2),
            "rss_mb_before": round(before, 1), "peak_rss_mb": round(_peak_rss_mb(), 1),
            "parquet_mb": round(size_mb, 1)}


def _child(kind: str, value: int, batch_size: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--child", kind, str(value), "--batch-size", str(batch_size)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"load bench child {kind} {value} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", nargs="?", choices=("images", "listing", "all"), default="all")
    parser.add_argument("--counts", default="200,2000", help="image counts, comma-separated")
    parser.add_argument("--keys", default="100000,1000000", help="listing sizes, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, value = args.child[0], int(args.child[1])
        result = measure_images(value, args.batch_size) if kind == "images" else measure_listing(value)
        print(json.dumps(result))
        return
    report = {"bench": "load", "machine": platform.machine(), "cpus": os.cpu_count(),
              "command": "python " + " ".join(sys.argv)}
    if args.what in ("listing", "all"):
        report["listing"] = [_child("listing", int(n), args.batch_size) for n in args.keys.split(",")]
    if args.what in ("images", "all"):
        runs = [_child("images", int(n), args.batch_size) for n in args.counts.split(",")]
        report["images"] = runs
        report["driver_peak_rss_growth_mb"] = round(runs[-1]["driver_peak_rss_mb"] - runs[0]["driver_peak_rss_mb"], 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
