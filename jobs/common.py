"""What every job shares: the config and model arguments, config from args, the model from config."""
from __future__ import annotations

import argparse

from jobs.config import load_config
from op4ksr.presets import DEFAULT_MODEL, PRESETS, SHIPPED_CHECKPOINTS

MODEL_HELP = (f"checkpoint folder, object-store prefix, training run folder (its latest checkpoint), shipped "
              f"checkpoint ({', '.join(SHIPPED_CHECKPOINTS)}) or preset with random weights "
              f"({', '.join(PRESETS)}); default: model.path ({DEFAULT_MODEL})")


def add_config_arguments(parser: argparse.ArgumentParser, default: tuple[str, ...] = (),
                         overrides: bool = True) -> None:
    """--config FILE (repeatable) and trailing key=value overrides, the same for every command
    (`overrides=False`: the command sorts key=value items out of its own positionals)."""
    named = f" (default: {', '.join(default)})" if default else ""
    parser.add_argument("--config", action="append", default=list(default), metavar="FILE",
                        help="YAML config merged over configs/default.yaml (repeatable; a name like 'local' "
                             f"means configs/local.yaml){named}")
    if overrides:
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help="config overrides, e.g. sr.scale=2 output.format=jpeg")


def add_model_argument(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--model: the model to run (model.path)."""
    parser.add_argument("--model", required=required, metavar="MODEL", help=MODEL_HELP)


def model_override(args) -> list[str]:
    """The override --model stands for (none when it was not given)."""
    return [f"model.path={args.model}"] if getattr(args, "model", None) else []


def config_from_args(args, extra_overrides: list[str] = ()):
    """The validated config for parsed args (ConfigError, a UserError, on a bad key or value)."""
    return load_config(args.config, list(args.overrides) + model_override(args) + list(extra_overrides))


def model_from_config(cfg):
    """The OP4KSR model a config names, through the one loader (op4ksr.loading); an object-store
    prefix is copied to a scratch folder first, removed once the model is loaded."""
    from jobs.config_checks import check_device
    from jobs.specs import model_reader, model_spec
    from pipeline.storage.materialise import load_materialised

    check_device(cfg, remote_gpus=False)  # the model runs here

    storage, _ = model_reader(cfg)
    return load_materialised(model_spec(cfg), storage)
