"""RunSpec: everything a backfill run needs, resolved once from the job config.

Built by the job from its config; the stages and the actor receive only their slice of it
(picklable dataclasses), never the whole config object.
"""
from __future__ import annotations

from dataclasses import dataclass

from actors.upscaler import ActorOptions, ModelSpec
from op4ksr.inference import resolve_model_path
from op4ksr.presets import PRESETS
from op4ksr.sizing import SizePolicy
from pipeline.incremental import parse_since
from pipeline.records import params_hash
from pipeline.storage import S3Credentials, StorageSpec, normalise_uri


@dataclass(frozen=True)
class PoolSpec:
    min_actors: int = 1
    max_actors: int = 1
    batch_size: int = 1
    num_gpus: float = 0
    num_cpus: float = 0.5
    decode_num_cpus: float = 0.25
    fetch_tasks: int = 2  # fetch/decode tasks at once
    fetch_threads: int = 4  # inputs fetched at once within one task
    start_timeout_s: float = 1800.0  # until actors.min actors are up, or the run fails


@dataclass(frozen=True)
class RunSpec:
    run_id: str
    input: StorageSpec
    output: StorageSpec
    extensions: tuple[str, ...]
    model: ModelSpec
    model_id: str
    actor: ActorOptions
    size: SizePolicy
    pool: PoolSpec
    limit: int | None = None
    dry_run: bool = False
    ray_num_cpus: float | None = None
    config_yaml: str = ""
    since: str | None = None  # run.since as given: None, "last" or an ISO time (pipeline.incremental)
    lock_ttl_seconds: float = 600.0
    watermark_margin_seconds: float = 900.0

    @property
    def params_hash(self) -> str:
        return self.actor.params_hash


def output_params(cfg) -> dict:
    """The config values that change an output's pixels or bytes (and so its params_hash)."""
    params = {"scale": None if cfg.sr.long_side else float(cfg.sr.scale), "long_side": cfg.sr.long_side,
              "format": cfg.output.format, "dtype": cfg.model.dtype,
              "decode_partitions": int(cfg.model.vae_decode_partitions)}
    if cfg.output.format in ("jpeg", "webp"):
        params["quality"] = int(cfg.output.quality)
    if cfg.output.format == "png":
        params["png_compress_level"] = int(cfg.output.png_compress_level)
    return params


def size_policy(cfg) -> SizePolicy:
    """The output-size policy of a config's sr.* keys."""
    return SizePolicy(None if cfg.sr.long_side else float(cfg.sr.scale), cfg.sr.long_side,
                      int(cfg.sr.min_output_side), float(cfg.sr.max_output_megapixels))


def model_identity(cfg, read_index) -> str:
    """model_id without loading weights: from the preset settings, or the checkpoint's model_index.json."""
    if not cfg.model.path:
        return f"preset:{cfg.model.preset}:seed{cfg.model.seed}:rfr-{cfg.rfr.mode}-{float(cfg.rfr.scale):g}"
    index = read_index()
    if not index.get("model_id"):
        raise ValueError(f"{cfg.model.path}: model_index.json has no model_id; re-save it with save_pretrained")
    return index["model_id"]


def build_run_spec(cfg, run_id: str, config_yaml: str, credentials: S3Credentials | None = None) -> RunSpec:
    """The RunSpec for a validated config (credentials only for an embedded server)."""
    import json

    def storage(uri: str) -> StorageSpec:
        return StorageSpec(normalise_uri(uri), cfg.storage.endpoint_url, cfg.storage.region,
                           int(cfg.storage.max_attempts), credentials)

    if not cfg.input.uri or not cfg.output.uri:
        raise ValueError("input.uri and output.uri must both be set (s3://bucket/prefix/ or a local folder)")
    since = None if cfg.run.since in (None, "") else str(cfg.run.since)
    parse_since(since)  # a ValueError naming run.since, before any work
    if not float(cfg.run.lock_ttl_seconds) > 0 or float(cfg.run.watermark_margin_seconds) < 0:
        raise ValueError(f"run.lock_ttl_seconds={cfg.run.lock_ttl_seconds} must be positive and "
                         f"run.watermark_margin_seconds={cfg.run.watermark_margin_seconds} 0 or more")
    path = resolve_model_path(cfg.model.path) if cfg.model.path else ""
    model_storage = storage(path) if path.startswith("s3://") else None
    if path and not model_storage and path not in PRESETS:
        from pathlib import Path

        if not (Path(path) / "model_index.json").is_file():
            raise ValueError(f"model.path={path}: no model_index.json there; give a checkpoint folder")

    def read_index() -> dict:
        if model_storage:
            return json.loads(model_storage.open().get("model_index.json"))
        from pathlib import Path

        return json.loads((Path(path) / "model_index.json").read_text())

    params = params_hash(output_params(cfg) | {"rfr": [cfg.rfr.mode, float(cfg.rfr.scale)] if not path else None})
    model = ModelSpec(path or cfg.model.preset, cfg.model.dtype, cfg.model.device, int(cfg.model.seed),
                      cfg.rfr.mode, float(cfg.rfr.scale), cfg.model.attention_backend,
                      int(cfg.model.vae_decode_partitions), model_storage)
    actor = ActorOptions(storage(cfg.output.uri), cfg.output.format, int(cfg.output.quality),
                         int(cfg.output.png_compress_level), float(cfg.report.threshold), cfg.report.period_px,
                         int(cfg.report.max_lag_multiple), tuple(tuple(s) for s in cfg.actors.warmup_shapes),
                         int(cfg.actors.upload_threads), params,
                         int(cfg.actors.torch_threads) if cfg.actors.torch_threads else None)
    size = size_policy(cfg)
    fetch_tasks = cfg.pipeline.fetch_tasks or 2 * int(cfg.actors.max)
    pool = PoolSpec(int(cfg.actors.min), int(cfg.actors.max), int(cfg.actors.batch_size),
                    float(cfg.actors.num_gpus), float(cfg.actors.num_cpus), float(cfg.pipeline.decode_num_cpus),
                    int(fetch_tasks), int(cfg.pipeline.fetch_threads), float(cfg.actors.start_timeout_s))
    return RunSpec(run_id, storage(cfg.input.uri), storage(cfg.output.uri), tuple(cfg.input.extensions), model,
                   model_identity(cfg, read_index), actor, size, pool, cfg.run.limit, bool(cfg.run.dry_run),
                   cfg.pipeline.ray_num_cpus, config_yaml, since=since,
                   lock_ttl_seconds=float(cfg.run.lock_ttl_seconds),
                   watermark_margin_seconds=float(cfg.run.watermark_margin_seconds))
