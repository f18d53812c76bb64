"""Job configuration: configs/default.yaml, merged with YAML files and `key=value` overrides.

Every key a job may read is in configs/default.yaml; anything else is a typo and is rejected
with the closest valid key named, so a misspelt override never silently does nothing.
"""
from __future__ import annotations

import difflib
import functools
import math
from pathlib import Path
from typing import Iterable

from omegaconf import DictConfig, ListConfig, OmegaConf

from jobs.config_rules import value_problems
from op4ksr.errors import UserError
from pipeline.storage import redact_url

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

# Sections whose children are free-form (a named table the user extends).
OPEN_SECTIONS = ("cost.presets", "actors.resources")
# Ray resources that have keys of their own (actors.num_cpus, actors.num_gpus) or are not custom.
_RAY_BUILTIN_RESOURCES = ("CPU", "GPU", "memory", "object_store_memory")


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
        layer = OmegaConf.merge(*[_override(item) for item in overrides])
        _check_known(layer, known, "the command line")
        cfg = OmegaConf.merge(cfg, layer)
    validate(cfg)
    return cfg


def _override(item: str) -> DictConfig:
    """One `key=value` override as a config layer; its value is YAML, so a value YAML cannot read (a
    leading `{`, an unclosed quote or bracket) or would cut (` #` starts a YAML comment) is refused
    naming the override: quote the value, e.g. peer.command='prog {input} {output}'."""
    key, _, value = item.partition("=")
    hint = f"fix the value or quote it whole, e.g. {key.strip()}='...'"
    try:
        layer = OmegaConf.from_dotlist([item])
    except Exception as err:  # noqa: BLE001 - yaml's and omegaconf's parser errors: one line naming the override
        problem = str(err).strip().splitlines()[0]
        raise ConfigError(f"override '{item}' is not a YAML value ({problem}); {hint}") from None
    if "#" in value:
        parsed = OmegaConf.select(layer, key.strip())
        if "#" not in str(OmegaConf.to_container(parsed) if isinstance(parsed, (DictConfig, ListConfig)) else parsed):
            raise ConfigError(f"override '{item}': ' #' starts a YAML comment, which would cut the value to "
                              f"{parsed!r}; {hint}")
    return layer


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the key for values that cannot work: every key against its rule
    (jobs/config_rules.py: type from the default, bounds, choices), then the checks across keys."""
    defaults = _defaults()
    problems = value_problems({key: _plain(OmegaConf.select(cfg, key)) for key in defaults}, defaults)
    if problems:
        raise ConfigError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    if int(cfg.actors.max) < int(cfg.actors.min):
        raise ConfigError(f"actors.min={cfg.actors.min}, actors.max={cfg.actors.max}: need 1 <= min <= max")
    _check_actor_resources(cfg.actors.resources)
    endpoint = cfg.storage.endpoint_url
    if endpoint and not str(endpoint).startswith(("http://", "https://")):
        raise ConfigError(f"storage.endpoint_url={redact_url(str(endpoint))!r} must start with http:// or https://")
    if 2 * int(cfg.video.chunk_overlap) > int(cfg.video.chunk_frames):  # a frame is then in at most two chunks
        raise ConfigError(f"video.chunk_overlap={cfg.video.chunk_overlap} must be at most half of "
                          f"video.chunk_frames={cfg.video.chunk_frames}")
    if not list(cfg.input.extensions):
        raise ConfigError("input.extensions is empty: give e.g. [.jpg, .png, .tif]")
    check_finite(cfg)


def check_finite(cfg: DictConfig) -> None:
    """ConfigError naming the first key (in file order) whose value, or an item of it, is NaN or infinite."""
    bad = _nonfinite(OmegaConf.to_container(cfg, resolve=True), "")
    if bad:
        key, value = bad
        raise ConfigError(f"{key}={value} is not a finite number: give a number (NaN and infinity are refused)")


def _nonfinite(value, key: str):
    if isinstance(value, float) and not math.isfinite(value):
        return key, value
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for name, item in items:
        found = _nonfinite(item, f"{key}.{name}" if isinstance(value, dict) and key else
                           str(name) if isinstance(value, dict) else f"{key}[{name}]")
        if found:
            return found
    return None


@functools.lru_cache(maxsize=1)
def _defaults() -> dict:
    """configs/default.yaml's leaf keys (open sections excluded) -> default value."""
    cfg = OmegaConf.load(DEFAULT_CONFIG)
    return {key: _plain(OmegaConf.select(cfg, key)) for key in _leaf_keys(cfg) if key not in OPEN_SECTIONS}


def _check_actor_resources(resources) -> None:
    """actors.resources: names Ray does not reserve, each with an amount Ray accepts."""
    example = "e.g. actors.resources.model_slot=1"
    if not isinstance(resources, DictConfig):
        raise ConfigError(f"actors.resources={resources!r} must be a mapping of Ray resource name to amount, {example}")
    for name, amount in resources.items():
        if name in _RAY_BUILTIN_RESOURCES:
            raise ConfigError(f"actors.resources.{name}: {name} is not a custom resource; use "
                              "actors.num_cpus / actors.num_gpus, or another name")
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not amount >= 0.0001:
            raise ConfigError(f"actors.resources.{name}={amount!r} must be a number of at least 0.0001 (Ray's "
                              f"smallest amount), {example}")


def _plain(value):
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def to_yaml(cfg: DictConfig) -> str:
    """The resolved config as YAML, for saving next to a run's outputs; a password in the endpoint is hidden."""
    if cfg.storage.endpoint_url:
        cfg = OmegaConf.merge(cfg, {"storage": {"endpoint_url": redact_url(str(cfg.storage.endpoint_url))}})
    return OmegaConf.to_yaml(cfg, resolve=True)
