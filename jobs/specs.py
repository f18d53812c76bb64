"""Config -> typed specs, in one place: every job builds what the library needs here.

The library (op4ksr/, pipeline/, actors/) never sees the omegaconf object; configs/default.yaml
is the contract for every default, so nothing below has a fallback value of its own.
"""
from __future__ import annotations

import functools
import json

from omegaconf import OmegaConf

from jobs.config import ConfigError
from jobs.config_checks import check_device, check_warmup_shapes
from jobs.config_rules import RULES, value_problems
from op4ksr.loading import (InferenceOptions, ModelSpec, check_stored_weights, checkpoint_reader, model_identity,
                            resolved_options)
from op4ksr.provenance.lineage import source_type_for
from op4ksr.sizing import SizePolicy
from pipeline.ledger.cost import PRICE_KEYS, Prices
from pipeline.manifest.records import params_hash
from pipeline.fleet.signing import PemSource, ProvenanceOptions, SigningSpec
from pipeline.fleet.spec import ActorOptions, ModelSource, PeerSpec, PoolSpec
from pipeline.run.spec import RunSpec
from pipeline.storage import S3Credentials, StorageSpec, normalise_uri


def inference_options(cfg) -> InferenceOptions:
    """The inference overrides of a config (null keys keep the checkpoint's saved values)."""
    return InferenceOptions(
        rfr_mode=cfg.rfr.mode,
        rfr_scale=None if cfg.rfr.scale is None else float(cfg.rfr.scale),
        decode_shift=cfg.model.decode_shift,
        fidelity=cfg.sr.fidelity,
        fidelity_levels=None if cfg.sr.fidelity_levels is None else int(cfg.sr.fidelity_levels),
        fidelity_strength=None if cfg.sr.fidelity_strength is None else float(cfg.sr.fidelity_strength),
        fidelity_iterations=None if cfg.sr.fidelity_iterations is None else int(cfg.sr.fidelity_iterations),
        decode_partitions=int(cfg.model.vae_decode_partitions),
        attention_backend=cfg.model.attention_backend,
    )


def model_source(cfg) -> str:
    """model.path, else model.preset (a preset only when model.path is set empty)."""
    return str(cfg.model.path or cfg.model.preset)


def model_spec(cfg) -> ModelSpec:
    """The ModelSpec a config names."""
    return ModelSpec(source=model_source(cfg), dtype=cfg.model.dtype, device=cfg.model.device,
                     seed=int(cfg.model.seed), weights=str(cfg.model.weights), offload=str(cfg.model.offload),
                     options=inference_options(cfg))


def size_policy(cfg, gpu_actors: bool = False, read_json=None) -> SizePolicy:
    """The output-size policy of a config's sr.* keys; `gpu_actors`: the model runs on other machines' GPUs;
    `read_json`: the model's checkpoint files (default: model_reader(cfg))."""
    return SizePolicy(scale=None if cfg.sr.long_side else float(cfg.sr.scale), long_side=cfg.sr.long_side,
                      min_side=int(cfg.sr.min_output_side),
                      max_megapixels=max_output_megapixels(cfg, gpu_actors, read_json),
                      max_input_pixels=int(float(cfg.sr.max_input_megapixels) * 1_000_000))


def max_output_megapixels(cfg, gpu_actors: bool = False, read_json=None) -> float:
    """sr.max_output_megapixels as a number: `auto` plans from the GPU's memory (op4ksr/inference/memory_plan.py)
    for the model that is loaded (its checkpoint's configs, through `read_json`, default model_reader(cfg);
    a preset's sizes when model.path names one): this machine's GPU, or sr.device_memory_gb; 40 on a CPU."""
    value = cfg.sr.max_output_megapixels
    if value != "auto":
        return float(value)
    if gpu_actors and cfg.sr.device_memory_gb is None:
        raise ConfigError("sr.max_output_megapixels=auto plans for the actors' GPUs, which this driver cannot see: "
                          "set sr.device_memory_gb (e.g. 80 for an H100)")
    from op4ksr.inference.batch import max_output_megapixels as planned

    return planned("auto", preset=model_source(cfg), read_json=read_json or model_reader(cfg)[1],
                   dtype=cfg.model.dtype, device=cfg.model.device, device_memory_gb=cfg.sr.device_memory_gb,
                   decode_partitions=int(cfg.model.vae_decode_partitions),
                   attention_backend=cfg.model.attention_backend, weights=str(cfg.model.weights),
                   offload=str(cfg.model.offload))


def output_options(cfg):
    """How `op4ksr upscale` writes its outputs."""
    from op4ksr.inference.local_files import OutputOptions

    return OutputOptions(format=cfg.output.format, quality=int(cfg.output.quality),
                         png_compress_level=int(cfg.output.png_compress_level), size=size_policy(cfg))


def video_settings(cfg):
    """How `op4ksr video` cuts, chunks, measures and writes (video.*)."""
    from op4ksr.video.settings import VideoSettings

    v = cfg.video
    return VideoSettings(cut_threshold=float(v.cut_threshold), chunk_frames=int(v.chunk_frames),
                         chunk_overlap=int(v.chunk_overlap), flicker_threshold=float(v.flicker_threshold),
                         codec=str(v.codec), measure_flow=bool(v.measure_flow), temporal=str(v.temporal),
                         temporal_weight=float(v.temporal_weight), deinterlace=str(v.deinterlace),
                         field_order=str(v.field_order), exr_transfer=str(v.exr_transfer))


def output_params(cfg, options: dict) -> dict:
    """The values that change an output's pixels or bytes (and so its params_hash); `options` resolved."""
    params = {"scale": None if cfg.sr.long_side else float(cfg.sr.scale), "long_side": cfg.sr.long_side,
              "format": cfg.output.format, "dtype": cfg.model.dtype,
              **({"weights": cfg.model.weights} if cfg.model.weights != "dtype" else {}),  # offload: same pixels
              "decode_partitions": int(cfg.model.vae_decode_partitions), "inference": options}
    if cfg.output.format in ("jpeg", "webp"):
        params["quality"] = int(cfg.output.quality)
    if cfg.output.format == "png":
        params["png_compress_level"] = int(cfg.output.png_compress_level)
    return params


def storage_spec(cfg, uri: str, credentials: S3Credentials | None = None) -> StorageSpec:
    """A StorageSpec for `uri` with the config's storage.* settings."""
    return StorageSpec(normalise_uri(uri), cfg.storage.endpoint_url, cfg.storage.region,
                       int(cfg.storage.max_attempts), credentials)


def pool_spec(cfg) -> PoolSpec:
    return PoolSpec(min_actors=int(cfg.actors.min), max_actors=int(cfg.actors.max),
                    batch_size=int(cfg.actors.batch_size), num_gpus=float(cfg.actors.num_gpus),
                    num_cpus=float(cfg.actors.num_cpus), decode_num_cpus=float(cfg.pipeline.decode_num_cpus),
                    fetch_tasks=int(cfg.pipeline.fetch_tasks or 2 * int(cfg.actors.max)),
                    fetch_threads=int(cfg.pipeline.fetch_threads), start_timeout_s=float(cfg.actors.start_timeout_s),
                    resources={str(name): float(amount) for name, amount in cfg.actors.resources.items()},
                    max_attempts_per_input=int(cfg.pipeline.max_attempts_per_input))


def _pem_source(cfg, key: str, credentials: S3Credentials | None) -> PemSource:
    location = str(OmegaConf.select(cfg, key))
    if "://" not in location:
        return PemSource(key, location)
    folder, _, name = location.rpartition("/")
    return PemSource(key, location, storage_spec(cfg, folder + "/", credentials), name)


def signing_spec(cfg, credentials: S3Credentials | None = None) -> SigningSpec | None:
    """Where provenance.* says the signing identity lies (None: no C2PA manifests); nothing read yet."""
    p = cfg.provenance
    if not p.cert_chain and not p.private_key:
        return None
    if not p.cert_chain or not p.private_key:
        missing = "provenance.cert_chain" if not p.cert_chain else "provenance.private_key"
        raise ConfigError(f"{missing} is empty: set both provenance.cert_chain and provenance.private_key, or neither")
    return SigningSpec(cert_chain=_pem_source(cfg, "provenance.cert_chain", credentials),
                       private_key=_pem_source(cfg, "provenance.private_key", credentials),
                       algorithm=str(p.algorithm), tsa_url=str(p.tsa_url))


def provenance_options(cfg, credentials: S3Credentials | None = None) -> ProvenanceOptions:
    """provenance.*: the source type for this config's model (auto: by its kind) and the signing spec."""
    kind = str(cfg.peer.kind or "op4ksr")
    return ProvenanceOptions(digital_source_type=source_type_for(str(cfg.provenance.digital_source_type), kind),
                             signing=signing_spec(cfg, credentials), embed=bool(cfg.provenance.embed))


def actor_options(cfg, output: StorageSpec, params: str, credentials: S3Credentials | None = None) -> ActorOptions:
    return ActorOptions(output=output, output_format=cfg.output.format, quality=int(cfg.output.quality),
                        png_compress_level=int(cfg.output.png_compress_level),
                        report_threshold=float(cfg.report.threshold), period_px=cfg.report.period_px,
                        max_lag_multiple=int(cfg.report.max_lag_multiple),
                        warmup_shapes=tuple(tuple(s) for s in cfg.actors.warmup_shapes),
                        upload_threads=int(cfg.actors.upload_threads), params_hash=params,
                        torch_threads=int(cfg.actors.torch_threads) if cfg.actors.torch_threads else None,
                        provenance=provenance_options(cfg, credentials),
                        evidence=evidence_options(cfg.report))


def evidence_options(report, **overrides):
    """EvidenceOptions of the config's report section (cfg.report), with `overrides` (a CLI's flags) over it."""
    from op4ksr.quality.evidence import EvidenceOptions

    values = {"contradiction_threshold": float(report.contradiction_threshold),
              "cell_threshold": float(report.cell_threshold), "text_check": str(report.text_check),
              "text_threshold": float(report.text_threshold), "faces": str(report.faces)}
    return EvidenceOptions(**(values | overrides))


def model_reader(cfg, credentials: S3Credentials | None = None):
    """(StorageSpec of an object-store model or None, read_json(relative path) of its checkpoint files or
    None for a preset): the model's configs, read without weights, from a folder or an object store."""
    spec = model_spec(cfg)
    storage = storage_spec(cfg, spec.source, credentials) if spec.source.startswith("s3://") else None
    if storage:
        opened = storage.open()
        read_json = lambda name: json.loads(opened.get(name))  # noqa: E731
    else:
        read_json = checkpoint_reader(spec)
    # model_index.json serves the id and the options, the configs the options and the size plan
    return storage, functools.cache(read_json) if read_json else None


def peer_spec(cfg) -> PeerSpec | None:
    """The other upscaler `peer.*` names (actors/peers.py), or None for the op4ksr model."""
    p = cfg.peer
    if not p.kind:
        return None
    return PeerSpec(kind=p.kind, path=str(p.path), command=str(p.command), tile=int(p.tile),
                    tile_overlap=int(p.tile_overlap), timeout_s=float(p.timeout_s))


def _model_source(cfg, credentials: S3Credentials | None) -> tuple[ModelSource, str, dict, object]:
    """(where the actor loads the model, model_id, resolved inference options, read_json), all without weights."""
    spec = model_spec(cfg)
    peer = peer_spec(cfg)
    if peer is not None:
        from actors.peers import peer_model_id

        # what changes a peer's pixels besides its id (the checkpoint's hash, the command line)
        options = {"peer": peer.kind} | ({"tile": peer.tile, "tile_overlap": peer.tile_overlap}
                                         if peer.kind == "spandrel" else {})
        return ModelSource(spec=spec, peer=peer), peer_model_id(peer), options, None
    storage, read_json = model_reader(cfg, credentials)
    if read_json is not None:  # an int8 checkpoint run as bf16 (or fp8 requantised): one line, before listing
        check_stored_weights(spec, read_json)
    return (ModelSource(spec=spec, storage=storage), model_identity(spec, read_json), resolved_options(spec, read_json),
            read_json)


def prices_from_config(cfg) -> Prices:
    """The prices a config selects: the entry `cost.preset` names under `cost.presets`, else `cost.*`."""
    section = cfg.cost
    values = {k: section[k] for k in PRICE_KEYS}
    name = section.get("preset") or ""
    if name:
        presets = section.get("presets") or {}
        if name not in presets:
            raise ConfigError(f"cost.preset={name!r} is not under cost.presets "
                             f"(known: {', '.join(presets) or 'none'}); add it there or pick another")
        unknown = set(presets[name]) - set(PRICE_KEYS) - {"description"}
        if unknown:
            raise ConfigError(f"cost.presets.{name}: unknown keys {', '.join(sorted(unknown))}; "
                             f"use {', '.join(PRICE_KEYS)}")
        values.update({k: v for k, v in presets[name].items() if k in PRICE_KEYS})
        problems = value_problems({f"cost.presets.{name}.{k}": v for k, v in presets[name].items() if k in PRICE_KEYS},
                                  {}, rule=RULES["cost.gpu_hour_usd"])  # a preset's price: as cost.* itself
        if problems:
            raise ConfigError(problems[0])
    return Prices(**{k: float(v) for k, v in values.items()}, preset=name)


def telemetry_from_config(cfg):
    """The Telemetry the config's telemetry.* keys ask for (a context manager)."""
    from pipeline.run.telemetry import open_telemetry

    t = cfg.telemetry
    return open_telemetry(t.exporter, file=t.file, otlp_endpoint=t.otlp_endpoint)


def train_launch(cfg):
    """Where and how `op4ksr train` runs its trainers (train.workers/use_gpu/..., storage.*)."""
    from pipeline.training.launch import Launch

    t = cfg.train
    return Launch(workers=int(t.workers), use_gpu=bool(t.use_gpu), cpus_per_worker=float(t.cpus_per_worker),
                  max_failures=int(t.max_failures), data_cpus=float(t.data_cpus), endpoint_url=cfg.storage.endpoint_url,
                  region=cfg.storage.region, max_attempts=int(cfg.storage.max_attempts))


def build_run_spec(cfg, run_id: str, config_yaml: str, credentials: S3Credentials | None = None) -> RunSpec:
    """The RunSpec for a validated config (credentials only for an embedded server)."""
    from pipeline.run.incremental import parse_since

    if not cfg.input.uri or not cfg.output.uri:
        raise ConfigError("input.uri and output.uri must both be set (s3://bucket/prefix/ or a local folder)")
    since = None if cfg.run.since in (None, "") else str(cfg.run.since)
    try:
        parse_since(since)  # names run.since, before any work
    except ValueError as err:
        raise ConfigError(str(err)) from None
    remote_gpus = float(cfg.actors.num_gpus) > 0
    peer = peer_spec(cfg)
    if peer is None or peer.kind == "spandrel":  # a command peer picks its own device
        check_device(cfg, remote_gpus)
    model, model_id, options, read_json = _model_source(cfg, credentials)
    output = storage_spec(cfg, cfg.output.uri, credentials)
    size = size_policy(cfg, gpu_actors=remote_gpus, read_json=read_json)
    check_warmup_shapes(cfg, size)
    # the signing identity is not in params_hash: a new certificate re-signs nothing (docs/PROVENANCE.md)
    actor = actor_options(cfg, output, params_hash(output_params(cfg, options)), credentials)
    actor.evidence.check_tools()  # report.text_check=on without Tesseract: one line, before any listing
    return RunSpec(
        run_id=run_id, input=storage_spec(cfg, cfg.input.uri, credentials), output=output,
        extensions=tuple(cfg.input.extensions), model=model, model_id=model_id,
        actor=actor, size=size, pool=pool_spec(cfg),
        limit=cfg.run.limit, dry_run=bool(cfg.run.dry_run),
        ray_num_cpus=cfg.pipeline.ray_num_cpus, config_yaml=config_yaml, since=since,
        lock_ttl_seconds=float(cfg.run.lock_ttl_seconds), retry_given_up=bool(cfg.run.retry_given_up),
        watermark_margin_seconds=float(cfg.run.watermark_margin_seconds), prices=prices_from_config(cfg))
