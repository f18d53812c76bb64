"""The Ray Data plan: read inputs.parquet -> fetch/decode tasks -> a pool of model actors.

The model stage is passed in (actors.upscaler.UpscaleActor in every job): the plan knows only
its contract, `cls(spec.model, spec.actor)` called with a pyarrow batch of fetched records and
returning manifest records, so `pipeline` never imports `actors` (docs/ARCHITECTURE.md).
"""
from __future__ import annotations

import re
import threading
from typing import Callable, Iterator

import pyarrow.fs as pafs
import ray
from ray.data._internal.execution.execution_callback import ExecutionCallback
from ray.data.block import BlockAccessor

from op4ksr.errors import UserError
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
    # each execution of a dataset built from here on tells ExecutorStop its executor (a dataset copies the
    # context when it is built: this must come before build_dataset)
    if _ExecutorsStarted not in context.custom_execution_callback_classes:
        context.custom_execution_callback_classes.append(_ExecutorsStarted)


class _ExecutorsStarted(ExecutionCallback):
    """Ray Data makes one per execution and tells it its executor: handed to every ExecutorStop open in this
    process. Module level: the DataContext that names it is pickled to Ray's workers."""

    collectors: list[list] = []
    lock = threading.Lock()

    def before_execution_starts(self, executor) -> None:
        with self.lock:
            for executors in self.collectors:
                executors.append(executor)


class ExecutorStop:
    """Inside `with ExecutorStop() as stop:`, the Ray Data executors started in this process are kept, and
    `stop()` shuts them down: for a run that ends before its dataset is exhausted (given up, an error,
    Ctrl-C). Ray Data shuts an executor down only when its iterator is exhausted or collected; until
    then its thread keeps polling Ray, which after `ray.shutdown()` makes Ray end the whole process."""

    def __init__(self) -> None:
        self.executors: list = []

    def __enter__(self) -> ExecutorStop:
        # the datasets' contexts name _ExecutorsStarted since configure_ray_data
        with _ExecutorsStarted.lock:
            _ExecutorsStarted.collectors.append(self.executors)
        return self

    def __exit__(self, *exc) -> None:
        with _ExecutorsStarted.lock:
            _ExecutorsStarted.collectors.remove(self.executors)

    def __call__(self) -> None:
        """Shut the executors down now (their tasks and actors stopped) and wait for their threads."""
        for executor in self.executors:
            executor.shutdown(force=True)
            executor.join(timeout=60)  # its loop ends at its next step once shut down


class ActorStartFailed(UserError):
    """A model actor died in its constructor (a checkpoint it cannot load, a device it does not have)."""


def iter_records(dataset: ray.data.Dataset, pool: PoolSpec, model_keys: str = "") -> Iterator[list[dict]]:
    """The dataset's manifest records, a block at a time; ActorStartTimeout if the pool cannot start.

    Blocks are read straight from the executor's output (`iter_internal_ref_bundles`), not through
    `iter_batches`: that one starts a prefetch thread of its own that calls `ray.wait` and is stopped
    only when its iterator is collected, so a run that ends early could leave it polling a Ray that
    is shut down. Here nothing runs but the executor, which ExecutorStop stops."""
    try:
        for bundle in dataset.iter_internal_ref_bundles():
            for ref in bundle.block_refs:
                yield BlockAccessor.for_block(ray.get(ref)).to_arrow().to_pylist()
    except ray.exceptions.ActorDiedError as err:
        if "creation task" not in str(err):
            raise
        raise ActorStartFailed(f"the model actor died while starting: {_last_line(str(err))}; check the keys it "
                               f"starts with ({model_keys or 'model.*, peer.*, actors.*'}), then rerun (done images "
                               "are kept)") from None
    except ray.exceptions.GetTimeoutError as err:
        if "starting actors" not in str(err):
            raise
        raise ActorStartTimeout(
            f"{pool.min_actors} model actor(s) of {pool.resources_text()} did not "
            f"start within actors.start_timeout_s={pool.start_timeout_s:g}: the cluster has no room for them "
            f"(`ray status` shows what is free); lower actors.min or actors.num_gpus, or add nodes") from None


def _last_line(text: str) -> str:
    """The exception line of a worker's traceback (its last non-empty line), colour codes removed."""
    lines = [line.strip() for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return lines[-1] if lines else text


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
