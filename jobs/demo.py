"""`op4ksr demo`: the whole product on this machine: embedded S3, Ray, actors, reports, manifest."""
from __future__ import annotations

import argparse
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args

DESCRIPTION = """\
Start a local S3 server (moto, on 127.0.0.1), upload sample images, run the real backfill
(S3 over HTTP, a local Ray, a warm model actor, quality reports, the run manifest), print the
summary and copy the results to a local folder you can open.
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="op4ksr demo", description=DESCRIPTION)
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="local folder for the results")
    parser.add_argument("--samples", type=Path, metavar="DIR",
                        help="only write the sample images into DIR (inputs to try upscale and backfill on) and exit")
    add_config_arguments(parser, default=("demo",))
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    if args.samples:
        from pipeline.storage import open_storage
        from jobs.demo_samples import upload_samples

        print(f"{upload_samples(open_storage(str(args.samples)))} sample images written to {args.samples.resolve()}")
        return 0

    from actors.upscaler import UpscaleActor

    from pipeline.run.backfill import run_backfill
    from jobs.demo_samples import copy_tree, upload_samples
    from pipeline.run.console import print_summary, progress_printer
    from jobs.session import run_session
    from jobs.specs import telemetry_from_config

    with run_session(cfg) as (spec, _server), telemetry_from_config(cfg) as telemetry:
        count = upload_samples(spec.input.open())
        print(f"uploaded {count} sample images to {spec.input.uri}")
        summary = run_backfill(spec, UpscaleActor, progress_printer(), telemetry=telemetry)  # priced at spec.prices
        copied = copy_tree(spec.output.open(), "", args.out)
    summary.report_uri = ""  # the embedded server is gone: name the local copy instead
    print_summary(summary, cfg)
    print(f"\n{copied} files copied to {args.out.resolve()}  (images/, reports/, runs/{summary.run_id}/)")
    print(f"report: {(args.out / 'runs' / summary.run_id / 'report.html').resolve()}")
    return 0 if summary.failed == 0 else 1
