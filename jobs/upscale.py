"""`op4ksr upscale`: upscale local image files and folders (no cluster, no object store)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import (add_config_arguments, add_model_argument, config_from_args, model_from_config,
                         size_overrides)
from jobs.config import to_yaml
from op4ksr.errors import UserError

DESCRIPTION = """\
Upscale image files with OP4KSR in one forward pass per image (no tiles).

Folders are walked recursively and their structure is mirrored under --out; an output is named
after its input with the output format's extension. No output is ever overwritten by another
input's: when two inputs name one output (a.jpg and a.png in one folder, or two 1.jpg given
from different folders), the first given owns it and the later one is refused by name and
writes nothing. An output file that already exists is kept, and its input skipped, unless
--overwrite is given. Inputs are read-only: an --out that is an input folder (a symlink or ./
counts) is refused before anything is written, --overwrite or not, and so is an output that
would replace an input file; an --out inside an input folder is never read back as input. A file that cannot be processed is reported on one line and the others
go on; the exit status is 0 only if no input failed or was refused. Any config key can be set
with key=value (see configs/default.yaml).

examples:
  op4ksr upscale photo.jpg --out upscaled/
  op4ksr upscale scans/ --out remaster/ --long-side 4096 --format jpeg output.quality=92
  op4ksr upscale scans/ --out remaster/ --model /models/op4ksr-flux-dev model.dtype=bfloat16
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr upscale", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", metavar="IN", help="image files or folders (and key=value overrides)")
    add_config_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder (created if missing)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--scale", type=float, help="output / input size (default 4)")
    size.add_argument("--long-side", type=int, metavar="PX", help="output long side in pixels, e.g. 4096")
    add_model_argument(parser)
    parser.add_argument("--format", choices=["png", "jpeg", "webp", "tiff"], help="output format (default png)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace output files that already exist (default: keep them, skip their inputs)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _overrides(args) -> list[str]:
    out = size_overrides(args)
    if args.format:
        out.append(f"output.format={args.format}")
    return out


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    positional = args.inputs + args.overrides  # argparse may put trailing key=value items in either list
    args.overrides = [a for a in positional if "=" in a and not Path(a).exists()]
    paths = [a for a in positional if a not in args.overrides]
    if not paths:
        raise UserError("give at least one image file or folder")
    cfg = config_from_args(args, _overrides(args))
    from op4ksr.inference.local_files import find_jobs, plan_jobs

    _check_out(args.out)
    jobs = list(find_jobs(paths, args.out, cfg.input.extensions, cfg.output.format))
    if not jobs:
        raise UserError(f"no image files found in {', '.join(paths)} (extensions: input.extensions)")
    # before the model loads and anything is written
    plan = plan_jobs(jobs, overwrite=args.overwrite, input_folders=[Path(p) for p in paths if Path(p).is_dir()],
                     out_dir=args.out)
    for failure in plan.refused:
        print(f"refused: {failure.source}: {failure.error}", file=sys.stderr)
    failures = list(plan.refused)
    if plan.todo:
        failures += _run(cfg, args, plan.todo)
    given = len(plan.todo) + len(plan.refused) + len(plan.existing)
    line = f"{len(plan.todo) + len(plan.refused) - len(failures)} of {given} images written to {args.out}"
    if failures:
        line += f"; {len(failures)} failed"
    if plan.existing:
        line += (f"; {len(plan.existing)} skipped: their output exists (e.g. {plan.existing[0].target}); "
                 "--overwrite replaces them")
    print(line, file=sys.stderr)
    return 0 if not failures else 1


def _check_out(out: Path) -> None:
    """One line, before the model loads, for an --out that cannot be a folder."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is an existing file, not a folder: give a folder (created if missing)")
    if any(parent.exists() and not parent.is_dir() for parent in out.parents):
        raise UserError(f"--out {out}: a part of its path is a file, not a folder: give another folder")


def _run(cfg, args, jobs) -> list:
    """Load the model and upscale `jobs`; their failures."""
    from tqdm import tqdm

    import op4ksr
    from jobs.specs import output_options
    from op4ksr.inference.local_files import upscale_paths

    model = model_from_config(cfg)
    options = output_options(cfg)
    provenance = {"version": op4ksr.__version__, "model_id": model.model_id}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "op4ksr-config.yaml").write_text(to_yaml(cfg))

    bar = tqdm(total=len(jobs), unit="img", disable=args.quiet, file=sys.stderr)

    def on_done(job, failure):
        if failure:
            bar.write(f"failed: {failure.source}: {failure.error}", file=sys.stderr)
        bar.update(1)

    failures = upscale_paths(model, jobs, options, provenance, on_done)
    bar.close()
    return failures
