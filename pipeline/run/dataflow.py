"""The Ray Data plan: read inputs.parquet -> fetch/decode tasks -> a pool of model actors.

The model stage is passed in (actors.upscaler.UpscaleActor in every job): the plan knows only
its contract, `cls(spec.model, spec.actor)` called with a pyarrow batch of fetched records and
returning manifest records, so `pipeline` never imports `actors` (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

from typing import Callable, Iterator

import pyarrow.fs as pafs
import ray

from pipeline.run.fetch import FetchContext, FetchDecode
from pipeline.fleet.model_stage import WatchedStage
from pipeline.fleet.pool_watch import ActorStartTimeout
from pipeline.fleet.ray_session import quiet_ray_data
from pipeline.fleet.spec import PoolSpec
from pipeline.run.spec import RunSpec
from pipeline.storage import StorageSpec


def arrow_filesystem(spec: StorageSpec, uri: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and path for `uri` inside the storage `spec` describes."""
    if not uri.startswith("s3://"):
        return pafs.LocalFileSystem(), uri
    options = {"region": spec.region}
    if spec.endpoint_url:
        scheme, _, host = spec.endpoint_url.partition("://")
        options.update(endpoint_override=host, scheme=scheme)
    if spec.credentials:
        options.update(access_key=spec.credentials.access_key_id, secret_key=spec.credentials.secret_access_key)
    return pafs.S3FileSystem(**options), uri[len("s3://"):]


def configure_ray_data(pool: PoolSpec) -> None:
    """This driver's Ray Data settings: our own progress line instead of Ray Data's bars and
    periodic INFO dumps, and a bounded wait for the actor pool (unbounded, a run on a cluster
    with no free GPU would wait for ever)."""
    quiet_ray_data()
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Nothing runs until actors.min actors are loaded and warm; measured, this costs no time
    # to the first batch (docs/PERFORMANCE.md), and a pool that cannot start fails the run.
    context.wait_for_min_actors_s = pool.start_timeout_s
    # Between actors.min and actors.max the pool grows when every call slot of its actors is taken
    # and released actors idle (Ray Data's autoscaler; its default waits for nearly two queued
    # calls per slot, which a bounded fetch stage seldom queues: a 1..2 pool never grew here)
    context.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0


def iter_records(dataset: ray.data.Dataset, pool: PoolSpec) -> Iterator[list[dict]]:
    """The dataset's manifest records, a block at a time; ActorStartTimeout if the pool cannot start."""
    try:
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            yield batch.to_pylist()
    except ray.exceptions.GetTimeoutError as err:
        if "starting actors" not in str(err):
            raise
        raise ActorStartTimeout(
            f"{pool.min_actors} model actor(s) of {pool.resources_text()} did not "
            f"start within actors.start_timeout_s={pool.start_timeout_s:g}: the cluster has no room for them "
            f"(`ray status` shows what is free); lower actors.min or actors.num_gpus, or add nodes") from None


def fetch_stage(spec: RunSpec, traceparent: str = "", threads: int | None = None) -> FetchDecode:
    """The fetch/decode callable of a run (`threads`: pipeline.fetch_threads unless given)."""
    return FetchDecode(FetchContext(spec.input, spec.output, spec.run_id, spec.model_id, spec.params_hash,
                                    spec.actor.output_format, spec.size, traceparent,
                                    threads or spec.pool.fetch_threads,
                                    keep_source_bytes=spec.actor.provenance.signing is not None))


ModelStage = Callable  # a class: ModelStage(ModelSource, ActorOptions)(pa.Table) -> pa.Table


def build_dataset(spec: RunSpec, model_stage: ModelStage, inputs_uri: str, traceparent: str = "", roll=None,
                  book=None) -> ray.data.Dataset:
    """The lazy dataset of manifest records for one run (each carrying `traceparent`, the run span's context).

    `roll` and `book`: the run's ActorRoll and AttemptBook (pipeline/fleet/model_stage.py).
    """
    filesystem, path = arrow_filesystem(spec.output, inputs_uri)
    pool = spec.pool
    fetch = fetch_stage(spec, traceparent)
    return (
        ray.data.read_parquet(path, filesystem=filesystem)
        .select_columns(["key", "etag", "collides_with"])
        # one block per actor batch: pixels stay bounded in flight and results stream back
        # batch by batch (a Parquet row group would otherwise be one block of thousands of rows)
        .repartition(target_num_rows_per_block=pool.batch_size)
        # a bounded number of fetch tasks: unbounded, they take every CPU and the actors wait
        .map_batches(fetch, batch_size=pool.batch_size, batch_format="pyarrow", num_cpus=pool.decode_num_cpus,
                     compute=ray.data.TaskPoolStrategy(size=pool.fetch_tasks))
        .map_batches(
            WatchedStage,
            fn_constructor_kwargs={"stage_cls": model_stage, "model": spec.model, "options": spec.actor, "roll": roll,
                                   "book": book, "max_attempts": pool.max_attempts_per_input},
            batch_size=pool.batch_size,
            batch_format="pyarrow",
            num_gpus=pool.num_gpus or None,
            num_cpus=pool.num_cpus,
            resources=dict(pool.resources) or None,
            # two calls per actor: one batch's forward overlaps the last one's encode + upload (actors/upscaler.py);
            # an input tried alone still gets the process to itself (model_stage.ReadersWriterLock)
            compute=ray.data.ActorPoolStrategy(min_size=pool.min_actors, max_size=pool.max_actors,
                                               max_concurrent_calls_per_actor=2, enable_true_multi_threading=True),
        )
    )
