"""`op4ksr cost`: what runs cost, per image and per stage, and what the rest of a catalog will cost."""
from __future__ import annotations

import argparse
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from op4ksr.errors import UserError

DESCRIPTION = """\
Read the cost ledgers (runs/<id>/cost.parquet) of backfill runs and print the total, the cost
per image (mean, p50, p95), the cost by stage, device utilisation, a table grouped by run,
month or input prefix, and the projected cost of what the runs listed but did not finish;
draw the same as a PNG chart. docs/COST.md explains the model and the Parquet schema.

examples:
  op4ksr cost demo-output/runs/20261101T120000000000Z/
  op4ksr cost --catalog s3://archive/4k/ --group-by month storage.endpoint_url=https://minio:9000
  op4ksr cost --catalog s3://archive/4k/ --reprice cost.preset=h100-on-prem
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr cost", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="*", metavar="RUN_URI | key=value",
                        help="run folders (<output.uri>/runs/<run_id>/) and config overrides, in any order")
    parser.add_argument("--catalog", metavar="OUTPUT_URI", help="every run under a backfill's output.uri")
    parser.add_argument("--group-by", choices=("run", "month", "prefix"), default="run",
                        help="rows of the grouped table (default: run)")
    parser.add_argument("--chart", type=Path, default=Path("op4ksr-cost.png"), help="PNG chart to write")
    parser.add_argument("--reprice", action="store_true",
                        help="price with this config's cost.* / cost.preset instead of each run's own prices")
    add_config_arguments(parser, overrides=False)  # key=value items come in with the run uris
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    uris = [a for a in args.items if "=" not in a]
    args.overrides = [a for a in args.items if "=" in a]
    if bool(uris) == bool(args.catalog):
        parser.error("give RUN_URI... or --catalog OUTPUT_URI (one of the two)")
    cfg = config_from_args(args)

    from jobs.specs import prices_from_config, storage_spec
    from pipeline.ledger.catalog_cost import catalog_runs, cost_report
    from pipeline.ledger.cost import format_cost
    from pipeline.storage import StorageError

    def opener(uri: str):
        return storage_spec(cfg, uri).open()

    by = {"run": "run_id"}.get(args.group_by, args.group_by)
    try:
        runs = catalog_runs(opener, args.catalog) if args.catalog else [opener(uri) for uri in uris]
        report = cost_report(runs, by, prices_from_config(cfg) if args.reprice else None,
                             rebuild_prices=prices_from_config(cfg))
    except StorageError as err:  # no such run folder, refused credentials: the user fixes it
        raise UserError(str(err)) from None
    print(f"{len(report.runs)} run(s), {report.summary['images']} ledger rows, {report.summary['ok']} ok\n")
    print(format_cost(report.summary))
    print(f"\nby {args.group_by}:\n{report.groups.to_string(index=False, float_format=lambda v: f'{v:.6g}')}")
    print(f"\ninputs listed {report.listed}, remaining {report.remaining}, projected USD {report.projected_usd:.6f} "
          f"(at {report.summary['per_delivered_image_usd']:.6f} per delivered image)")
    args.chart.write_bytes(report.totals.chart(by))
    print(f"chart: {args.chart.resolve()}")
    return 0
