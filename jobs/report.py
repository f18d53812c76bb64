"""`op4ksr report`: rebuild a run's cost.parquet, summary.json and report.html from its manifest."""
from __future__ import annotations

import argparse

from jobs.common import add_config_arguments, config_from_args
from op4ksr.errors import UserError

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
    parser.add_argument("run_uri", metavar="RUN_URI", help="the run folder (<output.uri>/runs/<run_id>/)")
    parser.add_argument("--reprice", action="store_true",
                        help="price with this config's cost.* / cost.preset instead of the run's own prices")
    add_config_arguments(parser)
    return parser


def rebuild(opener, run_uri: str, reprice_cfg=None) -> dict:
    """Rebuild a run's finish outputs with the settings of its own config.yaml (prices from
    `reprice_cfg` when given); returns the new summary.json's dict."""
    from omegaconf import OmegaConf

    from jobs.config import load_config
    from jobs.specs import prices_from_config
    from pipeline.ledger.finish import rebuild_run
    from pipeline.storage import ObjectNotFoundError

    defaults = load_config()  # for what an older run's config.yaml lacks (or a run without one)
    try:
        saved = OmegaConf.create(opener(run_uri).get("config.yaml").decode("utf-8"))
    except ObjectNotFoundError:
        saved = OmegaConf.create({})  # an older run: default prices, no contact sheet
    if reprice_cfg is not None:
        prices = prices_from_config(reprice_cfg)
    else:
        prices = prices_from_config(saved if OmegaConf.select(saved, "cost.gpu_hour_usd") is not None else defaults)
    threshold = OmegaConf.select(saved, "report.threshold", default=defaults.report.threshold)
    return rebuild_run(opener, run_uri, prices, float(threshold), input_uri=OmegaConf.select(saved, "input.uri"))


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args)

    from jobs.specs import storage_spec
    from pipeline.ledger.cost import format_cost
    from pipeline.storage import StorageError

    try:
        summary = rebuild(lambda uri: storage_spec(cfg, uri).open(), args.run_uri, cfg if args.reprice else None)
    except StorageError as err:  # no such run folder, refused credentials: the user fixes it
        raise UserError(str(err)) from None
    print(f"run {summary['run_id']}: {summary['total']} listed, {summary['ok']} ok, {summary['failed']} failed, "
          f"{summary['skipped']} skipped\n")
    print(format_cost(summary["cost"]))
    print(f"\ncost: {summary['cost_uri']}\nsummary: {summary['summary_uri']}\nreport: {summary['report_uri']}")
    return 0
