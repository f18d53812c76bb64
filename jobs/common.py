"""What every job shares: the config and model arguments, config from args, the model from config."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable

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


def size_overrides(args) -> list[str]:
    """The overrides --scale and --long-side stand for (a scale clears the config's long side)."""
    out = []
    if args.scale is not None:
        out += [f"sr.scale={args.scale}", "sr.long_side=null"]
    if args.long_side is not None:
        out.append(f"sr.long_side={args.long_side}")
    return out


def files_with_bases(images: list[str]) -> list[tuple[str, Path]]:
    """(image file, the folder its --reference name is relative to): a folder's images relative to the
    folder, files given one by one relative to their common folder."""
    from op4ksr.images.folders import image_files

    files = [Path(n) for n in images if not Path(n).is_dir()]
    common = Path(os.path.commonpath([real_path(f).parent for f in files])) if files else None
    found = []
    for name in images:
        path = Path(name)
        found += ([(str(f), path.resolve()) for f in image_files(path)] if path.is_dir() else [(name, common)])
    return found


def real_path(path: Path) -> Path:
    """`path` resolved, or made absolute when it cannot be (a symlink loop): it then fails alone, when read."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return path.absolute()


def rows_per_file(images: list[str], row_of: Callable[[str, Path], dict], failure: str,
                  as_json: bool) -> tuple[list[dict], int]:
    """`row_of(file, base)` for every file of `images` (printed as JSON lines when `as_json`), and the exit
    status: a file that fails is one line on stderr (`failure` names the command and verb), status 1, and the
    others go on."""
    rows, status = [], 0
    for name, base in files_with_bases(images):
        try:
            row = row_of(name, base)
        except Exception as err:  # noqa: BLE001 - one unreadable file must not stop the others
            print(f"{failure} {name}: {type(err).__name__}: {err}", file=sys.stderr)
            status = 1
            continue
        if as_json:
            print(json.dumps(row), flush=True)
        rows.append(row)
    return rows, status


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
