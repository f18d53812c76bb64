"""The typed spec of a backfill run: everything the driver needs, resolved once (jobs/specs.py).

Like the model stage's specs (pipeline/fleet/spec.py), a plain, picklable, keyword-only dataclass
with no defaults of its own for what the config decides.
"""
from __future__ import annotations

from dataclasses import dataclass

from op4ksr.sizing import SizePolicy
from pipeline.fleet.spec import ActorOptions, ModelSource, PoolSpec
from pipeline.ledger.cost import Prices
from pipeline.storage import StorageSpec


@dataclass(frozen=True, kw_only=True)
class RunSpec:
    """Everything one backfill run needs, resolved once on the driver."""

    run_id: str
    input: StorageSpec
    output: StorageSpec
    extensions: tuple[str, ...]
    model: ModelSource
    model_id: str
    actor: ActorOptions
    size: SizePolicy
    pool: PoolSpec
    limit: int | None
    dry_run: bool
    ray_num_cpus: float | None
    config_yaml: str
    since: str | None  # run.since as given: None, "last" or an ISO time (pipeline.run.incremental)
    lock_ttl_seconds: float
    retry_given_up: bool  # run.retry_given_up: retry inputs an earlier run gave up on (pipeline/fleet/attempts.py)
    watermark_margin_seconds: float
    prices: Prices  # cost.* (or the cost.preset entry): what the run's ledger is priced with

    @property
    def params_hash(self) -> str:
        return self.actor.params_hash
