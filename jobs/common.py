"""Helpers shared by job entry points: config arguments and model loading from config."""
from __future__ import annotations

import argparse

from jobs.config import ConfigError, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", default=[], metavar="FILE",
                        help="YAML config merged over configs/default.yaml (repeatable; a name like 'local' "
                             "means configs/local.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. sr.scale=2 output.format=jpeg")


def config_from_args(args, extra_overrides: list[str] = ()):
    """The validated config for parsed args; exits with a one-line message on a config error."""
    try:
        return load_config(args.config, list(args.overrides) + list(extra_overrides))
    except ConfigError as err:
        raise SystemExit(f"op4ksr: config error: {err}") from None


def model_from_config(cfg):
    """The OP4KSR model a config names (model.path, else model.preset)."""
    from op4ksr.inference import load_model

    return load_model(
        cfg.model.path or cfg.model.preset,
        dtype=cfg.model.dtype,
        device=cfg.model.device,
        seed=cfg.model.seed,
        rfr_mode=cfg.rfr.mode,
        rfr_scale=float(cfg.rfr.scale),
        attention_backend=cfg.model.attention_backend,
        decode_partitions=cfg.model.vae_decode_partitions,
    )
