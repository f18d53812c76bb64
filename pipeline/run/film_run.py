"""A frame-sequence run on Ray: list -> cuts and chunks (driver) -> a pool of chunk actors -> rows, cost.

The unit of work is a chunk of a shot (pipeline/run/film_plan.py); the record is a frame
(pipeline/manifest/frames.py), written by the actor that ran it. A rerun schedules only the
chunks with a frame that has no `done` row, so a killed run's rerun does each frame once. At the
end the run's rows are priced (model seconds at cost.gpu_hour_usd, per frame and per minute of
footage at video.fps) into runs/<id>/frame_cost.parquet and runs/<id>/summary.json. A run (not a dry
run) holds the output prefix's run lock throughout, the backfill's (pipeline.run.incremental). Video files
under the input are planned and muxed by pipeline/run/film_video_plan.py (their frames are rows
too); a video whose every frame is done is written at the end of the run. Last, the chunks' reports
become a per-shot report per sequence and the run's page (pipeline/run/film_report.py).
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

import op4ksr
from op4ksr.video.decode import VIDEO_EXTENSIONS
from op4ksr.video.sequences import SEQUENCE_EXTENSIONS
from pipeline.fleet.ray_session import ray_session
from pipeline.fleet.signing import check_before_run
from pipeline.listing.inputs import check_listable
from pipeline.listing.read_only import check_output_apart, excluded_prefixes
from pipeline.manifest.frames import frame_cost
from pipeline.manifest.layout import RUNS, run_key
from pipeline.run.film_plan import done_frames, plan_run
from pipeline.run.film_report import write_film_report
from pipeline.run.film_spec import FilmSpec
from pipeline.run.incremental import RunLock
from pipeline.run.film_video_plan import (done_video_frames, finish_video, list_videos, output_video_key,
                                          plan_videos)
from pipeline.storage import StorageError

FRAME_LEDGER = "frame_cost.parquet"  # not cost.parquet: `op4ksr cost` reads those as image ledgers
SUMMARY_KIND = "film"  # summary.json's `kind`: the estimate prices from the newest such run

LEDGER_SCHEMA = pa.schema([("run_id", pa.string()), ("sequence", pa.string()), ("frame", pa.int64()),
                           ("key", pa.string()), ("status", pa.string()), ("device_seconds", pa.float64()),
                           ("device_usd", pa.float64())])


def run_film(spec: FilmSpec, chunk_actor, on_progress: Callable[[dict], None] = lambda counts: None) -> dict:
    """Upscale every frame sequence under spec.run.input whose frames are not all done; the run's summary.
    `chunk_actor`: the actor class (actors.film.FilmChunkActor; `pipeline` never imports `actors`)."""
    run = spec.run
    check_output_apart(run.input.uri, run.output.uri)
    inputs, outputs = run.input.open(), run.output.open()
    check_listable(inputs, SEQUENCE_EXTENSIONS + VIDEO_EXTENSIONS)
    check_before_run(run.actor.provenance)  # a bad signing identity is refused before anything is listed
    outputs.check_writable()
    with _run_lock(outputs, run):
        return _run(spec, chunk_actor, on_progress, inputs, outputs)


@contextlib.contextmanager
def _run_lock(outputs, run):
    """The backfill's lock on the output prefix (runs/_lock.json, pipeline.run.incremental.RunLock), held
    for the run, not for a dry run: one run at a time per output, film or image backfill alike, because
    both write runs/ and images/ there and read every run's rows. RunLockedError (one line) naming the
    holder if another run holds it."""
    if run.dry_run:
        yield
        return
    with RunLock.acquire(outputs, run.run_id, float(run.lock_ttl_seconds)):
        yield


def _run(spec: FilmSpec, chunk_actor, on_progress, inputs, outputs) -> dict:
    run = spec.run
    started = time.perf_counter()
    outputs.put(run_key(run.run_id, "config.yaml"), run.config_yaml.encode(), "text/yaml")
    done = done_frames(outputs, run.model_id, spec.params_hash)
    exclude = excluded_prefixes(run.input.uri, [run.output.uri])
    video_keys = list_videos(inputs, exclude)
    items, problems, frames = plan_run(inputs, outputs, run.run_id, spec.video, run.size.plan, done, exclude,
                                       videos=len(video_keys))
    with tempfile.TemporaryDirectory(prefix="op4ksr-film-videos-") as scratch:
        video_done = done_video_frames(outputs, run.model_id, spec.params_hash) if video_keys else {}
        plans, more, refused = plan_videos(inputs, outputs, run.run_id, video_keys, Path(scratch), spec.video,
                                           run.size.plan, video_done)
        items, problems, frames = items + more, problems + refused, frames + sum(p.frames for p in plans)
        due = sum(not d for item in items for d in item["done"][item["lead_in"]:])
        rows, counts = [], Counter()  # counted as chunks come in: summing every row per chunk grows as frames²
        if items and not run.dry_run:
            for batch in _process(spec, chunk_actor, items):
                rows += batch
                counts.update(r["status"] for r in batch)
                on_progress({"frames": frames, "due": due, "done": counts["done"], "failed": counts["failed"]})
        videos = [] if run.dry_run else _finish_videos(spec, outputs, plans, video_done, rows, Path(scratch))
    summary = {"kind": SUMMARY_KIND, "run_id": run.run_id, "frames": frames, "already_done": frames - due,
               "due": due, "chunks": len(items), "done": counts["done"],
               "failed": counts["failed"], "refused": problems, "videos": videos,
               "dry_run": run.dry_run, "seconds": round(time.perf_counter() - started, 3),
               "cost": frame_cost(rows, run.prices.gpu_hour_usd, spec.fps)}
    if run.dry_run:
        summary["estimate"] = estimate(outputs, run.run_id, due, spec.fps)
    else:
        outputs.put(run_key(run.run_id, FRAME_LEDGER), _ledger(rows, run.prices.gpu_hour_usd),
                    "application/vnd.apache.parquet")
        summary["report"] = write_film_report(outputs, run.run_id, summary, spec.video.flicker_threshold)
    outputs.put(run_key(run.run_id, "summary.json"), json.dumps(summary, indent=1).encode(), "application/json")
    return summary


def _finish_videos(spec: FilmSpec, outputs, plans, done: dict, rows: list[dict], scratch: Path) -> list[dict]:
    """Each planned video muxed into its output where every frame is done or filled by this run and this run
    did some of them or its output is not there yet; what the summary says of each."""
    done = {**done, **{(r["key"], r["frame"]): r["output_key"] for r in rows if r["status"] == "done"}}
    filled = {(r["key"], r["frame"]): r["output_key"] for r in rows if r["status"] == "failed"}
    options = spec.run.actor.provenance  # with an identity, each written video is signed (C2PA) here
    provenance = {"version": op4ksr.__version__, "model_id": spec.run.model_id, "params_hash": spec.params_hash,
                  "digital_source_type": options.digital_source_type}
    signer = None
    if options.signing is not None and plans:
        from op4ksr.provenance.manifest import ManifestSigner  # c2pa loads only where a video is signed

        signer = ManifestSigner(options.signing.load())
    ran = {r["key"] for r in rows}
    finished = []
    for plan in plans:
        if plan.key not in ran and outputs.head(output_video_key(plan.key)) is not None:
            finished.append({"video": plan.key, "frames": plan.frames, "missing": 0,
                             "output": output_video_key(plan.key), "filled_from_bicubic": [],
                             "already_written": True})
            continue
        finished.append(finish_video(outputs, plan, done, filled, scratch, spec.video.codec, provenance, signer,
                                     options.embed))
    return finished


def _process(spec: FilmSpec, chunk_actor, items: list[dict]):
    """Each finished chunk's rows, as the actor pool returns them."""
    import ray

    from pipeline.run.dataflow import ExecutorStop, configure_ray_data, iter_records

    pool = spec.run.pool
    with ray_session(spec.run.ray_num_cpus):
        configure_ray_data(pool)
        work = [{"work": json.dumps(item)} for item in items]  # a sequence's and a video's items differ in fields
        dataset = ray.data.from_items(work, override_num_blocks=len(items)).map_batches(
            chunk_actor, fn_constructor_kwargs={"model": spec.run.model, "options": spec.actor_options()},
            batch_size=1,  # one chunk per call: its frames in order on one actor
            batch_format="pyarrow", num_gpus=pool.num_gpus or None,
            num_cpus=pool.num_cpus,  # fractional by default (actors.num_cpus), so a 2-core Ray cannot deadlock
            resources=dict(pool.resources) or None,
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors))
        with ExecutorStop() as stop, contextlib.closing(iter_records(dataset, pool)) as records:
            try:
                yield from records
            except BaseException:  # an error or Ctrl-C: the executor's thread must not outlive this Ray
                stop()
                raise


def _ledger(rows: list[dict], gpu_hour_usd: float) -> bytes:
    """Each frame's device seconds (its own and its share of the chunk's lead-in) and their price."""
    table = pa.Table.from_pylist([
        {"run_id": r["run_id"], "sequence": r["sequence"], "frame": r["frame"], "key": r["key"], "status": r["status"],
         "device_seconds": (seconds := (r["seconds"] or 0.0) + (r["lead_in_seconds"] or 0.0)),
         "device_usd": seconds * gpu_hour_usd / 3600} for r in rows], schema=LEDGER_SCHEMA)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


def estimate(outputs, run_id: str, due: int, fps: float) -> dict:
    """What the due frames would cost at the newest earlier frame-sequence run's USD per frame."""
    runs = outputs.spec.child(RUNS).open()
    try:
        keys = sorted((o.key for o in runs.iter_objects([".json"]) if o.key.endswith("/summary.json")
                       and not o.key.startswith(f"{run_id}/")), reverse=True)
    except (StorageError, FileNotFoundError):
        keys = []
    for key in keys:
        summary = json.loads(runs.get(key))
        per_frame = (summary.get("cost") or {}).get("usd_per_frame")
        if summary.get("kind") == SUMMARY_KIND and not summary.get("dry_run") and per_frame is not None:
            return {"due": due, "usd_per_frame": per_frame, "usd_per_footage_minute": per_frame * fps * 60,
                    "estimated_usd": due * per_frame, "basis_run": summary["run_id"]}
    return {"due": due, "usd_per_frame": None, "usd_per_footage_minute": None, "estimated_usd": None,
            "basis_run": None}
