"""Whole-DataFrame views of a cost ledger, for tests only: the reference the streamed finish phase
(pipeline/ledger/finish.py) and `op4ksr cost` (pipeline/ledger/catalog_cost.py) are checked against.

The product never holds a run's manifest or ledger whole; these helpers do, on small test runs.
"""
from __future__ import annotations

import dataclasses
import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.config import load_config
from jobs.specs import prices_from_config
from pipeline.ledger.cost import LEDGER_FIELDS, LEDGER_SCHEMA, Prices, build_ledger, price
from pipeline.ledger.manifest_scan import manifest_parts
from pipeline.ledger.totals import GROUP_BYS, LedgerTotals
from pipeline.storage import ObjectNotFoundError, Storage


def default_prices() -> Prices:
    """The prices of configs/default.yaml (cost.*)."""
    return prices_from_config(load_config())


def read_manifest(run_storage: Storage) -> pd.DataFrame:
    """All manifest rows of the run whose folder `run_storage` is (runs/<id>/), as one DataFrame."""
    tables = [pq.read_table(io.BytesIO(run_storage.get(key))) for key in manifest_parts(run_storage)]
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def ledger_table(ledger: pd.DataFrame, prices: Prices) -> pa.Table:
    """The ledger as an Arrow table in LEDGER_SCHEMA, with the prices in the schema metadata."""
    table = pa.Table.from_pandas(ledger[list(LEDGER_FIELDS)], schema=LEDGER_SCHEMA, preserve_index=False)
    return table.replace_schema_metadata({"op4ksr.prices": json.dumps(dataclasses.asdict(prices))})


def write_ledger(run_storage: Storage, ledger: pd.DataFrame, prices: Prices) -> str:
    """Write cost.parquet into the run folder; returns its uri."""
    sink = pa.BufferOutputStream()
    pq.write_table(ledger_table(ledger, prices), sink)
    run_storage.put("cost.parquet", sink.getvalue().to_pybytes(), "application/vnd.apache.parquet")
    return run_storage.uri_for("cost.parquet")


def read_ledger(run_storage: Storage, prices: Prices | None = None) -> tuple[pd.DataFrame, Prices]:
    """(ledger, its prices): the run's cost.parquet, or one built from its manifest if it has none.

    `prices` reprices it; without them the run's own prices are kept (default.yaml's for a rebuilt one).
    """
    try:
        table = pq.read_table(io.BytesIO(run_storage.get("cost.parquet")))
    except ObjectNotFoundError:
        prices = prices or default_prices()
        return build_ledger(read_manifest(run_storage), prices), prices
    if prices is not None:
        return price(table.to_pandas(), prices), prices
    return table.to_pandas(), Prices(**json.loads((table.schema.metadata or {})[b"op4ksr.prices"]))


def cost_summary(ledger: pd.DataFrame, prices: Prices | None) -> dict:
    """summary.json's cost: USD by kind and by stage, per-image statistics, utilisation."""
    return LedgerTotals.of(ledger).summary(prices)


def stage_breakdown(ledger: pd.DataFrame) -> pd.DataFrame:
    """Seconds (or requests, GB) and USD per stage."""
    return LedgerTotals.of(ledger).stages()


def group_costs(ledger: pd.DataFrame, by: str) -> pd.DataFrame:
    """Per run, month or prefix: images, ok, USD, USD per delivered image, device seconds, utilisation."""
    if by not in GROUP_BYS:
        raise ValueError(f"group by {by!r}: use month or prefix (or run_id)")
    return LedgerTotals.of(ledger).groups(by)
