"""`op4ksr cost` over many runs: their ledgers streamed into one LedgerTotals, never held whole.

Each run's cost.parquet is read a batch at a time (rebuilt from its manifest, also streamed, for
a run that has none); what was listed and what is done are counted through 64-bit hashes of the
keys (8 bytes per key), so a catalog of 10 M images costs about 160 MB here, not a DataFrame of
every ledger row. The odds that two keys' hashes collide and shift `remaining` by one are about
1 in 400,000 at 10 M keys: good enough for a projection.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from op4ksr.errors import UserError
from pipeline.ledger.cost import Prices, price, with_later_columns
from pipeline.ledger.finish import ledger_batches
from pipeline.ledger.totals import LedgerTotals
from pipeline.ledger.manifest_scan import BATCH_ROWS, local_copy, open_parquet, scan_parquet
from pipeline.storage import Storage

_DONE = ("ok", "skipped")


@dataclasses.dataclass
class CostReport:
    """What `op4ksr cost` shows for a set of runs: their ledger totals, summary, groups and the projection."""

    runs: list[str]              # run folder uris
    totals: LedgerTotals         # the ledgers' sums (totals.chart(by) draws the chart)
    summary: dict                # totals.summary(prices): summary.json's cost
    groups: pd.DataFrame         # totals.groups(by)
    listed: int                  # distinct input keys listed by the runs
    remaining: int               # listed keys with no ok or skipped row in any run
    projected_usd: float         # remaining x USD per delivered image so far


def catalog_runs(open_storage: Callable[[str], Storage], output_uri: str) -> list[Storage]:
    """The run folders (runs/<id>/ with a manifest) under a backfill's output uri, oldest first."""
    runs = open_storage(_child(output_uri, "runs"))
    ids = sorted({o.key.split("/", 1)[0] for o in runs.iter_objects(extensions=[".parquet"]) if "/manifest/" in o.key})
    if not ids:
        raise UserError(f"{runs.spec.uri}: no runs with a manifest; give the output.uri of a backfill")
    return [open_storage(_child(output_uri, f"runs/{run_id}")) for run_id in ids]


def cost_report(runs: list[Storage], by: str = "run_id", prices: Prices | None = None, *,
                rebuild_prices: Prices) -> CostReport:
    """Ledgers of `runs` together (repriced with `prices` if given), grouped `by` run_id, month or prefix.

    A run without cost.parquet (an older one) has its ledger built from its manifest at `prices`,
    else at `rebuild_prices` (the config's cost.*)."""
    totals, price_sets, listed, done = LedgerTotals(), set(), [], []
    for run in runs:
        with run_ledger(run, prices, rebuild_prices) as (batches, run_prices):
            price_sets.add(run_prices)
            for ledger in batches:
                totals.add(ledger)
                done.append(_key_hashes(ledger.loc[ledger["status"].isin(_DONE), "key"]))
        if run.exists("inputs.parquet"):  # an older or foreign run folder lists nothing
            listed += [_key_hashes(b.column("key").to_pandas()) for b in scan_parquet(run, ["inputs.parquet"], ["key"])]
    summary = totals.summary(price_sets.pop() if len(price_sets) == 1 else None)
    listed_keys = np.unique(np.concatenate(listed)) if listed else np.zeros(0, np.uint64)
    done_keys = np.unique(np.concatenate(done)) if done else np.zeros(0, np.uint64)
    remaining = int(np.isin(listed_keys, done_keys, assume_unique=True, invert=True).sum())
    return CostReport([r.spec.uri for r in runs], totals, summary, totals.groups(by), len(listed_keys), remaining,
                      remaining * summary["per_delivered_image_usd"])


@contextlib.contextmanager
def run_ledger(run: Storage, prices: Prices | None,
               rebuild_prices: Prices) -> Iterator[tuple[Iterator[pd.DataFrame], Prices]]:
    """(the run's ledger a batch at a time, its prices): cost.parquet, or one built from the manifest if it has
    none (an older run). `prices` reprices it; without them the run's own are kept (`rebuild_prices` for a
    rebuilt one)."""
    if not run.exists("cost.parquet"):
        rebuilt = prices or rebuild_prices
        yield (ledger for _, ledger in ledger_batches(run, rebuilt, None)), rebuilt
        return
    with local_copy(run, "cost.parquet") as path:
        ledger = open_parquet(path)
        own = Prices(**json.loads((ledger.schema_arrow.metadata or {})[b"op4ksr.prices"]))
        batches = (with_later_columns(b.to_pandas()) for b in ledger.iter_batches(batch_size=BATCH_ROWS))
        yield (batches, own) if prices is None else ((price(b, prices) for b in batches), prices)


def _key_hashes(keys: pd.Series) -> np.ndarray:
    return pd.util.hash_array(keys.astype(object).to_numpy(), categorize=False)


def _child(uri: str, name: str) -> str:
    return uri.rstrip("/") + "/" + name + ("/" if uri.startswith("s3://") else "")
