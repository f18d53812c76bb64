"""Catalog scale: listing, the done-index and `op4ksr report` on simulated 1 M - 10 M image runs; prints JSON.

usage:
  python bench/catalog_scale.py --rows 1000000,2000000            # all three measurements per size
  python bench/catalog_scale.py --rows 10000000 --only report     # one measurement (report: + cost --catalog)
  python bench/catalog_scale.py --rows 2000000 --list-latency-ms 50 --listing-workers 1,8
  python bench/catalog_scale.py --rows 2000000 --part-rows 1000 --only report   # a long run of small parts

No images: a synthetic run folder on local disk (manifest parts sized as ManifestWriter sizes
them, rows shaped like a real run's: 95% ok, 4% skipped, 1% failed, 16 actors) and a synthetic
listing (a Storage whose iter_objects pages through generated keys in 100 folders, sleeping
--list-latency-ms per page of 1,000 keys as an S3 LIST round trip would). Each measurement runs
in a fresh child process, so its peak RSS (ru_maxrss) is its own:
- listing: list_inputs -> write_inputs_parquet, sequential (workers=1) and fanned out;
- done-index: DoneIndex.build over the run's manifest, then every listed key looked up (the rerun's join);
- report: jobs.report.rebuild, what `op4ksr report RUN_URI` runs;
- cost: what `op4ksr cost --catalog` runs over that output prefix (after the report wrote cost.parquet).
"""
from __future__ import annotations

import argparse
import bisect
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FOLDERS = 100
MODEL_ID, PARAMS_HASH = "bench-model", "0123456789abcdef"
T0 = 1_780_000_000.0


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_seconds() -> float:
    """This process's user + system CPU seconds: on a shared machine, steadier than wall seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _key(index: int, rows: int) -> str:
    per_folder = -(-rows // FOLDERS)
    return f"d{index // per_folder:04d}/img-{index % per_folder:08d}.jpg"


class SyntheticListing:
    """`rows` keys in FOLDERS folders, listed in key order a page of 1,000 at a time with a sleep per page."""

    def __init__(self, rows: int, latency_s: float):
        from pipeline.storage import IOCounters, StorageSpec

        self.rows, self.latency_s = rows, latency_s
        self.spec, self.stats = StorageSpec("s3://bench-listing/"), IOCounters()  # s3: fan out as for S3
        self.keys = _KeyView(rows)

    def iter_objects(self, extensions=None, start_after=None):
        from pipeline.storage import ObjectInfo

        start = 0 if start_after is None else bisect.bisect_right(self.keys, start_after)
        stamp = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
        for page in range(start, self.rows, 1000):
            time.sleep(self.latency_s)
            self.stats.record("list")
            for i in range(page, min(page + 1000, self.rows)):
                yield ObjectInfo(_key(i, self.rows), 1000, f"{i:032x}", stamp)


class _KeyView:
    """The sorted keys as a sequence, without holding them (for bisect)."""

    def __init__(self, rows: int):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, i: int) -> str:
        return _key(i, self.rows)


def make_run(folder: str, rows: int, part_rows: int = 0) -> dict:
    """A run folder runs/bench/ under `folder`: manifest parts as ManifestWriter sizes them (or of `part_rows`
    each: a long run on a small fleet flushes a part every few minutes), finish.json."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.run.backfill import MANIFEST_FIRST_PART_ROWS, MANIFEST_MAX_PART_ROWS
    from pipeline.ledger.finish import FinishRecord
    from pipeline.manifest.records import MANIFEST_SCHEMA
    from pipeline.storage import open_storage

    start = time.perf_counter()
    run = os.path.join(folder, "runs", "bench")
    os.makedirs(os.path.join(run, "manifest"), exist_ok=True)
    rng = np.random.default_rng(0)
    done, part, size = 0, 0, part_rows or MANIFEST_FIRST_PART_ROWS
    while done < rows:
        n = min(size, rows - done)
        table = pa.Table.from_pydict(_rows(rng, done, n, rows), schema=MANIFEST_SCHEMA)
        pq.write_table(table, os.path.join(run, "manifest", f"part-{part:05d}.parquet"), row_group_size=1000)
        done, part = done + n, part + 1
        size = part_rows or min(2 * size, MANIFEST_MAX_PART_ROWS)
    FinishRecord("bench", T0 + rows / 100 + 60, rows / 100, listed=rows).save(open_storage(run))
    return {"rows": rows, "parts": part, "seconds": time.perf_counter() - start,
            "manifest_mb": sum(e.stat().st_size for e in os.scandir(os.path.join(run, "manifest"))) / 2**20}


def _rows(rng, first: int, n: int, rows: int) -> dict:
    """`n` manifest rows from row `first` on, as columns."""
    import numpy as np

    index = np.arange(first, first + n)
    status = np.where(rng.random(n) < 0.95, "ok", np.where(rng.random(n) < 0.8, "skipped", "failed"))
    ok, failed = status == "ok", status == "failed"
    keys = [_key(i, rows) for i in index]
    excess = np.where(ok, rng.gamma(1.0, 0.01, n), np.nan)
    started = T0 + index / 100.0
    forward = np.where(ok, rng.uniform(0.5, 2.0, n), np.nan)

    def ok_only(values):
        return np.where(ok, values, np.nan)

    return {
        "key": keys, "status": status.tolist(),
        "error_class": np.where(failed, "ImageDecodeError", None).tolist(),
        "error": np.where(failed, "cannot identify image file", None).tolist(),
        "attempts": np.where(status == "skipped", 0, 1),
        "input_etag": [f"{i:032x}" for i in index], "input_size": np.where(ok, "1024x768", None).tolist(),
        "output_key": ["images/" + k[:-4] + ".png" for k in keys], "output_size": np.where(ok, "4096x3072", None).tolist(),
        "model_id": [MODEL_ID] * n, "params_hash": [PARAMS_HASH] * n, "period_px": np.where(ok, 32, 0).tolist(),
        "ap_score_out": excess + 0.01, "ap_score_in": ok_only(np.full(n, 0.01)), "ap_excess": excess,
        "dominant_period_px": ok_only(np.full(n, 32.0)), "lr_consistency_psnr": ok_only(rng.normal(35, 2, n)),
        "colour_shift": ok_only(rng.uniform(0.0, 0.01, n)), "niqe": ok_only(rng.normal(5, 1, n)),
        "t_quality": ok_only(rng.uniform(0.3, 0.7, n)), "cpu_quality_seconds": ok_only(rng.uniform(0.3, 0.7, n)),
        "flagged": np.where(ok, excess > 0.04, None).tolist(),
        "t_fetch": rng.uniform(0.01, 0.1, n), "t_decode": ok_only(rng.uniform(0.01, 0.05, n)), "t_model": forward,
        "t_encode": ok_only(rng.uniform(0.05, 0.2, n)), "t_upload": ok_only(rng.uniform(0.01, 0.1, n)),
        "gpu_seconds": forward, "cpu_seconds": rng.uniform(0.05, 0.4, n),
        "bytes_in": np.where(status == "skipped", 0, 300_000), "bytes_out": np.where(ok, 12_000_000, 0),
        "requests_get": np.where(status == "skipped", 1, 2), "requests_put": np.where(ok, 2, 0),
        "actor_id": [f"node-{i % 16:02d}" for i in index], "run_id": ["bench"] * n,
        "traceparent": ["00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"] * n,
        "started_at": started, "model_started_at": ok_only(started + 0.2), "encode_started_at": ok_only(started + 2.5),
        "cpu_fetch_seconds": rng.uniform(0.01, 0.05, n), "cpu_decode_seconds": ok_only(rng.uniform(0.01, 0.05, n)),
        "cpu_encode_seconds": ok_only(rng.uniform(0.05, 0.2, n)), "cpu_upload_seconds": ok_only(rng.uniform(0.0, 0.02, n)),
        "device": ["cuda:0"] * n, "actor_started_at": np.full(n, T0 - 60.0), "actor_load_seconds": np.full(n, 20.0),
        "actor_warmup_seconds": np.full(n, 10.0),
    }


def measure_report(folder: str) -> dict:
    from jobs.report import rebuild
    from pipeline.storage import open_storage

    start, cpu = time.perf_counter(), _cpu_seconds()
    summary = rebuild(open_storage, os.path.join(folder, "runs", "bench"))
    return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu,
            "peak_rss_mb": _peak_rss_mb(), "rows": summary["total"],
            "ok": summary["ok"], "total_usd": summary["cost"]["total_usd"],
            "report_kb": os.path.getsize(os.path.join(folder, "runs", "bench", "report.html")) / 1024,
            "cost_parquet_mb": os.path.getsize(os.path.join(folder, "runs", "bench", "cost.parquet")) / 2**20}


def measure_cost(folder: str) -> dict:
    """`op4ksr cost --catalog` over the output prefix (the run's cost.parquet, written by the report child)."""
    from jobs.config import load_config
    from jobs.specs import prices_from_config
    from pipeline.ledger.catalog_cost import catalog_runs, cost_report
    from pipeline.storage import open_storage

    start, cpu = time.perf_counter(), _cpu_seconds()
    report = cost_report(catalog_runs(open_storage, folder), "month", rebuild_prices=prices_from_config(load_config()))
    chart = report.totals.chart("month")
    return {"seconds": time.perf_counter() - start, "cpu_seconds": _cpu_seconds() - cpu,
            "peak_rss_mb": _peak_rss_mb(), "images": report.summary["images"],
            "chart_kb": len(chart) / 1024}


def measure_done_index(folder: str, rows: int) -> dict:
    import pyarrow as pa

    from pipeline.listing.done_index import DoneIndex
    from pipeline.storage import open_storage

    start = time.perf_counter()
    index = DoneIndex.build(open_storage(folder), MODEL_ID, PARAMS_HASH)
    built = time.perf_counter() - start
    hits = clashes = 0
    owners_seconds = 0.0
    for first in range(0, rows, 10_000):  # the listing's batches, as write_inputs_parquet hands them over
        span = range(first, min(first + 10_000, rows))
        keys = [_key(i, rows) for i in span]
        hits += int(index.contains(pa.array(keys), pa.array([f"{i:032x}" for i in span])).sum())
        owners_start = time.perf_counter()  # who wrote each output before (a run's collision check)
        outputs = ["images/" + k[:-4] + ".png" for k in keys]
        clashes += sum(o is not None for o in index.owners.owners_of(outputs, keys, extensions=(".jpg", ".png")))
        owners_seconds += time.perf_counter() - owners_start
    return {"build_seconds": built, "lookup_seconds": time.perf_counter() - start - built,
            "owners_lookup_seconds": owners_seconds, "indexed": len(index), "outputs_indexed": len(index.owners),
            "hits": hits, "collisions": clashes, "peak_rss_mb": _peak_rss_mb()}


def measure_listing(folder: str, rows: int, latency_s: float, workers: int) -> dict:
    from pipeline.listing.inputs import list_inputs, write_inputs_parquet
    from pipeline.storage import open_storage

    out = open_storage(folder)
    storage = SyntheticListing(rows, latency_s)
    start = time.perf_counter()
    listed = write_inputs_parquet(list_inputs(storage, workers=workers), out, f"inputs-{workers}.parquet")
    return {"workers": workers, "seconds": time.perf_counter() - start, "keys": listed,
            "list_requests": storage.stats.snapshot().list_requests, "peak_rss_mb": _peak_rss_mb()}


def _child(args: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions() -> dict:
    import pandas
    import pyarrow

    return {"python": platform.python_version(), "pyarrow": pyarrow.__version__, "pandas": pandas.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="1000000,2000000")
    parser.add_argument("--only", default="report,done-index,listing",
                        help="comma list of report (with cost), done-index, listing")
    parser.add_argument("--part-rows", type=int, default=0,
                        help="rows per manifest part (default: ManifestWriter's sizes, doubling up to its maximum)")
    parser.add_argument("--list-latency-ms", type=float, default=50.0)
    parser.add_argument("--listing-workers", default="1,8", help="listing threads to measure: 1 is sequential")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, folder, rows = args.child[0], args.child[1], int(args.child[2])
        result = {"make": lambda: make_run(folder, rows, int(args.child[3]) if len(args.child) > 3 else 0), "report": lambda: measure_report(folder),
                  "cost": lambda: measure_cost(folder),
                  "done-index": lambda: measure_done_index(folder, rows),
                  "listing": lambda: measure_listing(folder, rows, float(args.child[3]), int(args.child[4]))}[kind]()
        print(json.dumps(result))
        return
    results = {"versions": _versions(), "sizes": []}
    for rows in (int(r) for r in args.rows.split(",")):
        with tempfile.TemporaryDirectory(prefix="op4ksr-scale-") as folder:
            entry = {"rows": rows, "make": _child(["make", folder, str(rows), str(args.part_rows)])}
            only = args.only.split(",")
            if "report" in only:
                entry["report"] = _child(["report", folder, str(rows)])
                entry["cost_catalog"] = _child(["cost", folder, str(rows)])
            if "done-index" in only:
                entry["done_index"] = _child(["done-index", folder, str(rows)])
            if "listing" in only:
                latency = str(args.list_latency_ms / 1000)
                entry["listing"] = [_child(["listing", folder, str(rows), latency, w])
                                    for w in args.listing_workers.split(",")]
            results["sizes"].append(entry)
            print(json.dumps(entry), file=sys.stderr, flush=True)
    results["load_avg_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
