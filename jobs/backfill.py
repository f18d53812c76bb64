"""`op4ksr backfill`: upscale everything under an input prefix that is not done yet."""
from __future__ import annotations

import argparse

from jobs.common import add_config_arguments, config_from_args
from jobs.config import ConfigError

DESCRIPTION = """\
Run the batch pipeline: list input.uri, skip what is already done (same input etag, model and
output parameters), upscale the rest on a pool of warm model actors, and write images,
per-image quality reports and the run's manifest under output.uri.

examples:
  op4ksr backfill --config local input.uri=./scans output.uri=./remastered   # local folders, tiny model, CPU
  op4ksr backfill --config flux-dev-4k input.uri=s3://archive/scans/ output.uri=s3://archive/4k/
  op4ksr backfill --config flux-dev-4k run.dry_run=true # list and estimate, process nothing
  op4ksr backfill --config flux-dev-4k --since last     # only inputs newer than the last clean run

One run at a time per output.uri: a run holds runs/_lock.json there, and a second run stops
with an error naming the holder.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr backfill", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list what would be done, process nothing")
    parser.add_argument("--limit", type=int, help="process at most this many inputs")
    parser.add_argument("--since", metavar="last|TIME",
                        help="only inputs modified after TIME (ISO 8601, UTC unless a zone is given) or, "
                             "with 'last', after the watermark of the last run with no failures (run.since)")
    add_config_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)  # key=value items may come after the flags
    extra = (["run.dry_run=true"] if args.dry_run else []) + ([f"run.limit={args.limit}"] if args.limit is not None else [])
    extra += [f"run.since={args.since}"] if args.since is not None else []
    cfg = config_from_args(args, extra)
    if cfg.storage.embedded:
        raise ConfigError("storage.embedded=true starts an empty S3 server that is gone when the run ends: "
                          "nothing to list, nothing kept. Run `op4ksr demo` for that, or give your folders: "
                          "op4ksr backfill --config local input.uri=./scans output.uri=./remastered")

    from actors.peers import model_stage

    from pipeline.run.backfill import run_backfill
    from pipeline.run.console import print_summary, progress_printer
    from jobs.session import run_session
    from jobs.specs import telemetry_from_config

    # a UserError (bad config, a locked output, no room for the actors) is printed as one line by
    # jobs.cli; anything else is a bug or an outage and keeps its traceback
    with run_session(cfg) as (spec, _server), telemetry_from_config(cfg) as telemetry:
        summary = run_backfill(spec, model_stage(spec.model), progress_printer(), telemetry=telemetry)  # priced at spec.prices
    print_summary(summary, cfg)
    return 0 if summary.failed == 0 else 1
