"""`op4ksr bench-build`: a synthetic SR benchmark (HR crops, degraded LR, manifest), deterministic."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs.common import add_config_arguments, config_from_args
from op4ksr.errors import UserError

DESCRIPTION = """\
Cut HR crops of bench.hr_size from the images under --hr, degrade each to LR with the
degrade.* options (Real-ESRGAN second order by default; degrade.clean_prob=1 gives plain
bicubic downscaling) and write <out>/hr/*.png, <out>/lr/*.png and <out>/manifest.json.
The same inputs, options and bench.seed give the same files byte for byte.

--hr takes a local folder, or offline:train / offline:heldout (scikit-image's bundled
photos and generated textures; no network).

examples:
  op4ksr bench-build --hr offline:heldout --out bench/heldout-x4 --scale 4
  op4ksr bench-build --hr scans/ --out bench/scans --scale 4 bench.hr_size=[2048,2048] degrade.clean_prob=1
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr bench-build", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hr", required=True, metavar="DIR", help="folder of HR images, or offline:<split>")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="benchmark folder to write")
    parser.add_argument("--scale", type=int, help="HR / LR size (default: sr.scale, 4)")
    add_config_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args, [f"sr.scale={args.scale}"] if args.scale else [])

    from omegaconf import OmegaConf

    from op4ksr.evaluation.benchset import build_bench, load_images
    from op4ksr.images.degrade import DegradeConfig

    degrade_cfg = DegradeConfig.from_dict({**OmegaConf.to_container(cfg.degrade), "scale": int(cfg.sr.scale)})
    try:
        images = load_images(args.hr)
    except FileNotFoundError as err:
        raise UserError(f"--hr {args.hr}: {err}") from None
    size = cfg.bench.hr_size
    hr_size = None if size is None else (int(size), int(size)) if isinstance(size, int) else tuple(map(int, size))
    manifest = build_bench(images, args.out, degrade_cfg, hr_size, int(cfg.bench.crops_per_image),
                           int(cfg.bench.seed), source=args.hr)
    print(json.dumps({"out": str(args.out), "items": len(manifest["items"]), "scale": manifest["scale"]}))
    return 0
