"""Job configuration: configs/default.yaml, merged with YAML files and `key=value` overrides.

Every key a job may read is in configs/default.yaml; anything else is a typo and is rejected
with the closest valid key named, so a misspelt override never silently does nothing.
"""
from __future__ import annotations

import difflib
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, OmegaConf

from op4ksr.errors import UserError
from pipeline.storage import redact_url

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

# Sections whose children are free-form (a named table the user extends).
OPEN_SECTIONS = ("cost.presets",)


class ConfigError(UserError):
    """A config the user wrote is wrong; the message says which key and what to do."""


def _leaf_keys(cfg, prefix: str = "") -> Iterable[str]:
    if isinstance(cfg, DictConfig):
        for key in cfg.keys():
            path = f"{prefix}{key}"
            if any(path == s or path.startswith(s + ".") for s in OPEN_SECTIONS):
                yield path
                continue
            value = cfg._get_node(key)
            if isinstance(value, DictConfig) and len(value) > 0:
                yield from _leaf_keys(value, path + ".")
            else:
                yield path


def _check_known(candidate: DictConfig, known: set[str], source: str) -> None:
    for key in _leaf_keys(candidate):
        if key in known or any(key.startswith(s + ".") or key == s for s in OPEN_SECTIONS):
            continue
        if any(k.startswith(key + ".") for k in known):
            continue  # a whole section given as an empty mapping
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown config key '{key}' in {source}{hint}")


def resolve_path(name: str) -> Path:
    """A config argument as a file: a path, or a name under configs/ (with or without .yaml)."""
    # also relative to the repo root, so `--config configs/x.yaml` works from any directory
    for candidate in (Path(name), CONFIG_DIR.parent / name, CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"config file '{name}' not found (looked in . and {CONFIG_DIR})")


def load_config(files: Iterable[str] = (), overrides: Iterable[str] = ()) -> DictConfig:
    """The merged, validated config: default.yaml <- each file <- each `key=value` override."""
    cfg = OmegaConf.load(DEFAULT_CONFIG)
    known = set(_leaf_keys(cfg))
    for name in files:
        path = resolve_path(name)
        layer = OmegaConf.load(path)
        if not isinstance(layer, DictConfig):
            raise ConfigError(f"config file '{path}' must be a mapping of sections")
        _check_known(layer, known, str(path))
        cfg = OmegaConf.merge(cfg, layer)
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. sr.scale=2)")
    if overrides:
        layer = OmegaConf.from_dotlist(overrides)
        _check_known(layer, known, "the command line")
        cfg = OmegaConf.merge(cfg, layer)
    validate(cfg)
    return cfg


def _choice(cfg: DictConfig, key: str, allowed: tuple) -> None:
    value = OmegaConf.select(cfg, key)
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not one of {', '.join(map(str, allowed))}")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for values that cannot work."""
    _choice(cfg, "output.format", ("png", "jpeg", "webp", "tiff"))
    _choice(cfg, "model.preset", ("tiny", "flux-dev"))
    _choice(cfg, "model.dtype", ("float32", "bfloat16", "float16"))
    _choice(cfg, "rfr.mode", (None, "none", "base", "ntk"))
    _choice(cfg, "sr.fidelity", (None, "none", "wavelet", "adain", "backproject"))
    _choice(cfg, "telemetry.exporter", ("none", "console", "file", "otlp"))
    if cfg.sr.long_side is not None and int(cfg.sr.long_side) <= 0:
        raise ConfigError(f"sr.long_side={cfg.sr.long_side} must be a positive number of pixels")
    if cfg.sr.long_side is None and not float(cfg.sr.scale) > 0:
        raise ConfigError(f"sr.scale={cfg.sr.scale} must be positive")
    if cfg.rfr.scale is not None and not float(cfg.rfr.scale) > 0:
        raise ConfigError(f"rfr.scale={cfg.rfr.scale} must be positive")
    if not 1 <= int(cfg.output.quality) <= 100:
        raise ConfigError(f"output.quality={cfg.output.quality} must be within 1..100")
    if not 0 <= int(cfg.output.png_compress_level) <= 9:
        raise ConfigError(f"output.png_compress_level={cfg.output.png_compress_level} must be 0..9")
    if int(cfg.actors.min) < 1 or int(cfg.actors.max) < int(cfg.actors.min):
        raise ConfigError(f"actors.min={cfg.actors.min}, actors.max={cfg.actors.max}: need 1 <= min <= max")
    if int(cfg.actors.batch_size) < 1:
        raise ConfigError(f"actors.batch_size={cfg.actors.batch_size} must be at least 1")
    if cfg.run.limit is not None and int(cfg.run.limit) < 0:
        raise ConfigError(f"run.limit={cfg.run.limit} must be 0 or more")
    for key, (lowest, allowed) in _LOWER_BOUNDS.items():
        value = OmegaConf.select(cfg, key)
        if value is None and key in _NULLABLE or value == "auto" and key in _AUTO:
            continue
        if not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number" + (" or auto" if key in _AUTO else ""))
        if not (float(value) >= lowest if allowed else float(value) > lowest):
            rule = "must be positive" if not allowed else f"must be at least {lowest}" if lowest else "must be 0 or more"
            raise ConfigError(f"{key}={value} {rule}")
    endpoint = cfg.storage.endpoint_url
    if endpoint and not str(endpoint).startswith(("http://", "https://")):
        raise ConfigError(f"storage.endpoint_url={redact_url(str(endpoint))!r} must start with http:// or https://")
    if not list(cfg.input.extensions):
        raise ConfigError("input.extensions is empty: give e.g. [.jpg, .png, .tif]")


# key -> (lowest value, whether the lowest itself is allowed)
_LOWER_BOUNDS = {"storage.max_attempts": (1, True), "sr.min_output_side": (1, True),
                 "sr.max_output_megapixels": (0, False), "actors.num_gpus": (0, True), "actors.num_cpus": (0, False),
                 "actors.upload_threads": (1, True), "actors.torch_threads": (1, True),
                 "actors.start_timeout_s": (0, False),
                 "pipeline.decode_num_cpus": (0, False),
                 "pipeline.fetch_tasks": (1, True), "pipeline.fetch_threads": (1, True),
                 "pipeline.max_attempts_per_input": (1, True),
                 "report.threshold": (0, True)}

_NULLABLE = {"pipeline.fetch_tasks", "actors.torch_threads"}  # null: the default configs/default.yaml describes
_AUTO = {"sr.max_output_megapixels"}  # auto: planned from the GPU's memory (jobs/specs.py)


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML, for saving next to a run's outputs; a password in the endpoint is hidden."""
    if cfg.storage.endpoint_url:
        cfg = OmegaConf.merge(cfg, {"storage": {"endpoint_url": redact_url(str(cfg.storage.endpoint_url))}})
    return OmegaConf.to_yaml(cfg, resolve=True)
