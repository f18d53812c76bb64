"""`op4ksr train` on a Ray cluster: Ray Train's TorchTrainer runs op4ksr.training.train on
`workers` workers (DDP or FSDP per train.strategy), fed by the Ray Data HR stream
(pipeline/training/data.py), with checkpoints published to `<output_dir>/checkpoints/` in object
storage (pipeline/training/store.py). Rerunning resumes from the latest checkpoint and says so; a
killed worker is restarted by Ray Train (`max_failures`) and resumes from the latest checkpoint.
"""
from __future__ import annotations

import dataclasses
import json
import uuid
from pathlib import Path
from typing import Callable

from op4ksr.training.config import TrainConfig
from op4ksr.training.loop import METRICS_FILE
from pipeline.storage import S3Credentials, StorageSpec, normalise_uri
from pipeline.storage.scratch import scratch
from pipeline.training.data import build_stream, list_hr_images, shard_batches
from pipeline.training.store import CheckpointStore

# draws made available per draw needed (plus a constant): room for skipped inputs; the stream is
# lazy, so draws that are never consumed are never fetched or cut
STREAM_MARGIN, STREAM_EXTRA = 4, 64


@dataclasses.dataclass(frozen=True)
class Launch:
    """Where and how the trainers run (train.workers/use_gpu/cpus_per_worker/max_failures, storage.*)."""

    workers: int
    use_gpu: bool
    cpus_per_worker: float
    max_failures: int
    data_cpus: float  # per Ray Data crop-and-degrade task
    endpoint_url: str
    region: str
    max_attempts: int
    credentials: S3Credentials | None = None  # explicit keys for a local test server only

    def storage(self, uri: str) -> StorageSpec:
        return StorageSpec(normalise_uri(uri), self.endpoint_url, self.region, self.max_attempts, self.credentials)


def _worker(config: dict) -> None:
    """Ray Train's train_loop_per_worker: fetch the latest checkpoint, stream batches, train, publish."""
    import ray.train

    cfg = TrainConfig.from_dict(config["train"])
    rank = ray.train.get_context().get_world_rank()
    store = CheckpointStore(config["output"]) if config["output"] is not None else None
    if store is None:
        _train_worker(cfg, None, None, config)
        return
    # the loop works in a local staging folder, removed when the worker ends (by the next one if it is
    # killed: pipeline/storage/scratch.py); the object store is the record
    with scratch(f"train-rank{rank}") as staging:
        _train_worker(cfg, store, staging, config)


def _train_worker(cfg: TrainConfig, store: CheckpointStore | None, staging: Path | None, config: dict) -> None:
    """One worker's training: from the latest checkpoint in `store` (fetched into `staging`), publishing to it."""
    import ray.train
    import ray.train.torch

    from op4ksr.training import TrainHooks, train

    resume_from = None
    if store is not None:
        latest = store.latest() if cfg.resume == "auto" else None
        if latest:
            resume_from = store.fetch(latest, staging / "fetched")
            # the run's metrics so far, so that the published file keeps growing across sessions
            (staging / METRICS_FILE).write_text(store.get_text(METRICS_FILE))
        cfg = cfg.replace(output_dir=str(staging), resume="never")

    def on_checkpoint(step: int, path: Path | None, metrics: dict) -> None:
        uri = str(path) if path else ""
        if store is not None and path is not None:
            uri = store.publish(path, cfg.keep_checkpoints)
            store.put_text(METRICS_FILE, (Path(cfg.output_dir) / METRICS_FILE).read_text())
        ray.train.report({**metrics, "checkpoint": uri})

    shard = ray.train.get_dataset_shard("train") if config["stream"] else None
    rows = shard.iter_batches(batch_size=cfg.batch_size, batch_format="numpy") if shard is not None else None
    hooks = TrainHooks(on_checkpoint=on_checkpoint, resume_from=resume_from,
                       batches=shard_batches(iter(rows), cfg.batch_size) if rows is not None else None,
                       on_step=config.get("on_step") or (lambda step, rank: None))
    train(cfg, device=ray.train.torch.get_device(), hooks=hooks)


def _resume_step(cfg: TrainConfig, store: CheckpointStore | None) -> tuple[int, str]:
    """(step, where) of the checkpoint a run will resume from; (0, "") for a fresh run. Says so."""
    from op4ksr.checkpoint import latest_checkpoint

    if cfg.resume != "auto":
        return 0, ""
    if store is not None:
        name = store.latest()
        where = store.uri(name) if name else ""
    else:
        path = latest_checkpoint(Path(cfg.output_dir))
        name, where = (path.name, str(path)) if path else (None, "")
    if not name:
        return 0, ""
    step = int(name.split("-", 1)[1])
    print(f"op4ksr train: resuming from {where} (step {step} of {cfg.steps})", flush=True)
    return step, where


def run_training(cfg: TrainConfig, launch: Launch, *, stream: bool | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> dict:
    """Fit the TorchTrainer; returns {"step", "checkpoint", "loss"} of the finished run.

    `stream` (default: unless train.data is offline:) feeds the trainers from the Ray Data HR
    stream; without it each worker draws its slice of the global batch from cfg.data itself.
    ValueError before any worker starts when train.data has no image."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    stream = (not cfg.data.startswith("offline:")) if stream is None else stream
    remote = cfg.output_dir.startswith("s3://")
    store = CheckpointStore(launch.storage(cfg.output_dir)) if remote else None
    if not remote:
        cfg = cfg.replace(output_dir=str(Path(cfg.output_dir).resolve()))
    if not stream and not cfg.data.startswith("offline:"):
        cfg = cfg.replace(data=str(Path(cfg.data).resolve()))  # workers run in their own directories
    if cfg.init_path and Path(cfg.init_path).exists():  # else a shipped checkpoint's name (op4ksr.loading)
        cfg = cfg.replace(init_path=str(Path(cfg.init_path).resolve()))
    datasets = {}
    if stream:
        data = launch.storage(cfg.data)
        keys = list_hr_images(data)
        step, _ = _resume_step(cfg, store)
        per_step = cfg.batch_size * launch.workers
        datasets["train"] = build_stream(keys, data, cfg, step * per_step,
                                         (cfg.steps - step) * per_step * STREAM_MARGIN + STREAM_EXTRA,
                                         launch.data_cpus)
    else:
        _resume_step(cfg, store)
    resources = {"CPU": launch.cpus_per_worker, **({"GPU": 1} if launch.use_gpu else {})}
    with scratch("ray-train") as ray_storage:  # Ray Train's own run records: our checkpoints live elsewhere
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"train": cfg.as_dict(), "output": store.output if store else None, "stream": stream,
                               "on_step": on_step},
            scaling_config=ScalingConfig(num_workers=launch.workers, use_gpu=launch.use_gpu,
                                         resources_per_worker=resources),
            run_config=RunConfig(name=f"op4ksr-train-{uuid.uuid4().hex[:8]}", storage_path=str(ray_storage),
                                 failure_config=FailureConfig(max_failures=launch.max_failures)),
            datasets=datasets,
        )
        trainer.fit()
    return summary(cfg, store)


def summary(cfg: TrainConfig, store: CheckpointStore | None) -> dict:
    """The last metrics row and the latest checkpoint of a run (local folder or object store)."""
    from op4ksr.checkpoint import latest_checkpoint

    if store is not None:
        name = store.latest()
        text = store.get_text(METRICS_FILE)
        checkpoint = store.uri(name) if name else None
    else:
        out = Path(cfg.output_dir)
        text = (out / METRICS_FILE).read_text() if (out / METRICS_FILE).is_file() else ""
        path = latest_checkpoint(out)
        checkpoint = str(path) if path else None
    lines = text.splitlines()
    last = json.loads(lines[-1]) if lines else {}
    return {"step": last.get("step"), "loss": last.get("loss"), "checkpoint": checkpoint,
            "skipped_inputs": last.get("skipped_inputs", 0)}
