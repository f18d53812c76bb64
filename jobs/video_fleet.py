"""`op4ksr video IN --out OUT --ray`: the frame sequences under a folder or an object-store prefix, on Ray.

Parses the command line into the backfill's config keys (input.uri, output.uri) and video.*, and
calls pipeline.run.film_run with the chunk actor (actors/film.py), for frame sequences and video
files alike (docs/VIDEO.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from jobs.common import add_config_arguments, add_model_argument, config_from_args, size_overrides

DESCRIPTION = """\
Upscale every frame sequence (name.<frame>.ext: DPX, EXR, TIFF, PNG) and video file (.mp4,
.mov, .mkv, ...) under IN, a folder or an s3:// prefix, on a Ray actor pool: shots (chunks of at
most video.chunk_frames frames, never across a cut) are the unit of work, each frame one manifest
row under OUT/runs/<id>/frames/. Sequences are written under OUT/images/ with the inputs' own keys
(same format, bit depth and frame numbers); a video, once all its frames are done, to
OUT/videos/<its key>.mkv with its timestamps and its audio, subtitle and data streams copied.
One run at a time per OUT (the backfill's lock, OUT/runs/_lock.json); with
provenance.cert_chain and provenance.private_key each video gets a C2PA manifest in
OUT/videos/<its key>.mkv.c2pa. A rerun does only the frames without a done row; a frame the
model fails on is filled from bicubic, gets a failed row, and is redone by the next run (a
video is written once none is left). The summary gives the cost per frame and per minute of footage (cost.gpu_hour_usd;
video.fps frames a second).

examples:
  op4ksr video scans/ --out remaster/ --ray --scale 2
  op4ksr video s3://archive/scans/ --out s3://archive/4k/ --ray actors.max=8 actors.num_gpus=1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr video --ray", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", metavar="IN", help="a folder or s3:// prefix holding frame sequences or videos")
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, metavar="OUT", help="output folder or s3:// prefix")
    parser.add_argument("--ray", action="store_true", help="run on Ray (this command)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, help="output / input size (default sr.scale)")
    size.add_argument("--long-side", type=int, metavar="PX", help="output long side in pixels")
    add_model_argument(parser)
    parser.add_argument("--dry-run", action="store_true", help="plan and price the due frames, process nothing")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    extra = [f"input.uri={args.input}", f"output.uri={args.out}", *size_overrides(args)]
    cfg = config_from_args(args, extra + (["run.dry_run=true"] if args.dry_run else []))

    from actors.film import FilmChunkActor
    from jobs.session import run_session
    from jobs.specs import video_settings
    from pipeline.run.film_run import run_film
    from pipeline.run.film_spec import FilmSpec

    with run_session(cfg) as (run, _server):
        spec = FilmSpec(run=run, video=video_settings(cfg), fps=float(cfg.video.fps))
        summary = run_film(spec, FilmChunkActor, _progress_printer())
    for line in summary["refused"]:
        print(f"refused: {line}", file=sys.stderr)
    for video in summary["videos"]:
        where = video["output"] or f"not written: {video['missing']} of {video['frames']} frames not done; rerun"
        if video.get("filled_from_bicubic"):
            where += (f" (frames {', '.join(map(str, video['filled_from_bicubic']))} filled from bicubic: "
                      "the model failed on them; a rerun redoes them and writes the video again)")
        if video.get("c2pa") == "sidecar":
            where += f"; its C2PA manifest in {video['output']}.c2pa"
        print(f"video {video['video']}: {where}", file=sys.stderr)
    cost = summary["cost"]
    per_frame = "-" if cost["usd_per_frame"] is None else f"{cost['usd_per_frame']:.6f}"
    per_minute = "-" if cost["usd_per_footage_minute"] is None else f"{cost['usd_per_footage_minute']:.4f}"
    print(f"run {summary['run_id']}: {summary['frames']} frames, {summary['already_done']} already done, "
          f"{summary['done']} done, {summary['failed']} failed (filled from bicubic); USD {per_frame} per frame, "
          f"{per_minute} per minute of footage at {cost['fps']:g} fps", file=sys.stderr)
    if summary.get("report"):
        print(f"report: {summary['report']} under the output (per-shot curves and temporal profiles)", file=sys.stderr)
    if summary.get("estimate"):
        print(json.dumps(summary["estimate"]))
    return 1 if summary["failed"] or summary["refused"] else 0


def _progress_printer(every_seconds: float = 5.0):
    """A progress callback printing one line at most every `every_seconds`, and the last one."""
    last = [0.0]

    def show(counts: dict) -> None:
        finished = counts["done"] + counts["failed"]
        if time.monotonic() - last[0] >= every_seconds or finished == counts["due"]:
            last[0] = time.monotonic()
            print(f"frames {finished}/{counts['due']} due  done {counts['done']}  failed {counts['failed']}",
                  file=sys.stderr, flush=True)

    return show
