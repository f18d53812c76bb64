"""`op4ksr report`: rebuild a run's cost.parquet, summary.json and report.html from its manifest."""
from __future__ import annotations

import argparse

from jobs.common import config_from_args

DESCRIPTION = """\
Redo the finish phase of a backfill run from its manifest (runs/<id>/manifest/*.parquet): the cost
ledger (cost.parquet), summary.json and report.html, streamed in bounded memory whatever the run's
size. Use it after a run died in its finish phase, or to price a run again (--reprice). The run's
own config.yaml gives the report threshold, the input prefix for the contact sheet and, without
--reprice, the prices.

examples:
  op4ksr report demo-output/runs/20261101T120000000000Z/
  op4ksr report s3://archive/4k/runs/20261101T120000000000Z/ storage.endpoint_url=https://minio:9000
  op4ksr report s3://archive/4k/runs/20261101T120000000000Z/ --reprice cost.preset=h100-on-prem
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr report", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("items", nargs="+", metavar="RUN_URI | key=value",
                        help="the run folder (<output.uri>/runs/<run_id>/) and config overrides, in any order")
    parser.add_argument("--reprice", action="store_true",
                        help="price with this config's cost.* / cost.preset instead of the run's own prices")
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config over configs/default.yaml (prices, storage.*); repeatable")
    return parser


def main(argv: list[str]) -> int:
    parser = build_parser()
    args = parser.parse_intermixed_args(argv)
    uris = [a for a in args.items if "=" not in a]
    args.overrides = [a for a in args.items if "=" in a]
    if len(uris) != 1:
        parser.error("give exactly one RUN_URI (<output.uri>/runs/<run_id>/)")
    cfg = config_from_args(args)

    from pipeline.cost import format_cost, prices_from_config
    from pipeline.finish import rebuild_run
    from pipeline.storage import StorageError, open_storage

    def opener(uri: str):
        return open_storage(uri, endpoint_url=cfg.storage.endpoint_url, region=cfg.storage.region,
                            max_attempts=int(cfg.storage.max_attempts))

    try:
        summary = rebuild_run(opener, uris[0], prices_from_config(cfg) if args.reprice else None)
    except (ValueError, StorageError) as err:
        raise SystemExit(f"op4ksr report: {err}") from None
    print(f"run {summary['run_id']}: {summary['total']} listed, {summary['ok']} ok, {summary['failed']} failed, "
          f"{summary['skipped']} skipped\n")
    print(format_cost(summary["cost"]))
    print(f"\ncost: {summary['cost_uri']}\nsummary: {summary['summary_uri']}\nreport: {summary['report_uri']}")
    return 0
