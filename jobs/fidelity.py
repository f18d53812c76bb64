"""`op4ksr fidelity`: where outputs of any upscaler contradict their masters, standalone."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import rows_per_file
from op4ksr.errors import UserError
from op4ksr.images.output_names import OutputClaims, collision_error

DESCRIPTION = """\
Check that upscaled images are still the same picture as their masters, as the pipeline checks
its outputs (docs/QUALITY.md, "Where an output changed the picture"):

  contradicted_fraction  share of cells (--cell px, 32 by default) where the output, downscaled
                         to the master's size, departs from the master by more than --cell-threshold
                         times what bicubic cannot reproduce there and the master's own noise
  worst_cell             where that departure is largest (output px), and how large
  added_detail           the output's energy above the master's resolution over bicubic's (1: none
                         added): texture a generative upscaler adds, a matter of policy, not a defect
  face_contradiction     the largest cell score over each frontal face found in the master (a proxy
                         for a redrawn face, not identity)
  text_cer, changed      Tesseract reads the master's bicubic upscale and the output; the share of
                         characters of its confidently read words that changed, and those words

flagged = contradicted_fraction > --contradiction-threshold, or text_cer > --text-threshold, or a
face above --cell-threshold. --reference is the master (one image), or a folder in which each
image's master has the same relative name (below the images' common folder), any image extension;
the output must be larger than its master. --heatmap DIR writes DIR/<name>.contradiction.png for
flagged images (--heatmap-all: every image): the map over the output, red above the threshold.

Prints a table, or one JSON object per line with --json. An unreadable file (or a missing
master) is reported on one line on stderr and the others go on; the exit status is then 1.

examples:
  op4ksr fidelity remastered/ --reference masters/ --heatmap qa/
  op4ksr fidelity poster_4k.png --reference poster.tif --text-check on --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr fidelity", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="OUTPUT", help="upscaled image files, or folders of them")
    parser.add_argument("--reference", type=Path, metavar="MASTER", required=True,
                        help="the master the images were upscaled from: a file, or a folder matched by relative name")
    parser.add_argument("--cell", type=int, default=None, metavar="PX",
                        help="cell side in output px (default: report.period_px, else 32)")
    for flag, key, what in (("--contradiction-threshold", "contradiction_threshold", "share of contradicted cells"),
                            ("--cell-threshold", "cell_threshold", "tolerances a cell may depart"),
                            ("--text-threshold", "text_threshold", "text_cer")):
        parser.add_argument(flag, type=float, default=None, dest=key, help=f"{what} (default: report.{key})")
    parser.add_argument("--text-check", choices=("off", "on", "auto"), default=None,
                        help="read text with Tesseract: on every image, only where lines are found, or not "
                             "(default: report.text_check)")
    parser.add_argument("--faces", choices=("off", "on", "auto"), default=None, help="default: report.faces")
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line instead of a table")
    parser.add_argument("--heatmap", type=Path, metavar="DIR", help="write DIR/<name>.contradiction.png for flagged images")
    parser.add_argument("--heatmap-all", action="store_true", help="with --heatmap: for every image")
    return parser


def options_from(args):
    """(cell px, EvidenceOptions): the flags over report.* of configs/default.yaml."""
    from jobs.config import load_config
    from jobs.specs import evidence_options

    report = load_config().report
    options = evidence_options(report, **{k: getattr(args, k) for k in (
        "contradiction_threshold", "cell_threshold", "text_threshold", "text_check", "faces")
        if getattr(args, k) is not None})
    cell = args.cell if args.cell is not None else (report.period_px or 32)
    if cell < 2:
        raise UserError(f"--cell must be at least 2 px, got {cell}")
    return int(cell), options


def check_file(name: str, base: Path, args, cell: int, options, heatmaps: OutputClaims) -> dict:
    """The row of one output file against its master; writes its heatmap when asked and flagged."""
    from jobs.periodicity import load_rgb, reference_for
    from op4ksr.quality.evidence import evidence
    from op4ksr.quality.heatmap import heatmap_png

    path = Path(name)
    master = reference_for(path, args.reference, base)
    x, x_lr = load_rgb(path), load_rgb(master)
    if x.shape[-2] <= x_lr.shape[-2] or x.shape[-1] <= x_lr.shape[-1]:
        raise UserError(f"{name} ({x.shape[-1]}x{x.shape[-2]}) is not larger than its master {master} "
                        f"({x_lr.shape[-1]}x{x_lr.shape[-2]}): give the upscaled image first")
    result, = evidence(x, x_lr, cell, options)
    row = {"path": name, "reference": str(master), "width": x.shape[-1], "height": x.shape[-2]} | result.fields
    if args.heatmap and result.contradiction.scores is not None and (result.flagged or args.heatmap_all):
        target = args.heatmap / path.resolve().relative_to(base).with_suffix(".contradiction.png")
        owner = heatmaps.claim(str(target), name)
        if owner is not None:
            raise collision_error(str(target), owner)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(heatmap_png(x[0], result.contradiction, options.cell_threshold))
        row["heatmap"] = str(target)
    return row


def _print_table(rows: list[dict]) -> None:
    width = max([len("path")] + [len(r["path"]) for r in rows])
    print(f"{'path':<{width}}  {'contradicted':>12}  {'worst':>6}  {'added':>6}  {'face':>5}  {'text_cer':>8}  flagged")
    for r in rows:
        def number(value, fmt):
            return "-" if value is None else format(value, fmt)
        worst = r["worst_cell"]["score"] if r["worst_cell"] else None
        print(f"{r['path']:<{width}}  {number(r['contradicted_fraction'], '12.4f')}  {number(worst, '6.2f')}  "
              f"{number(r['added_detail'], '6.2f')}  {number(r['face_contradiction'], '5.2f')}  "
              f"{number(r['text_cer'], '8.4f')}  {'yes' if r['evidence_flagged'] else 'no'}")
        for word in r["changed_words"]:
            print(f"    text changed at {word['left']},{word['top']}: {word['input']!r} -> {word['output']!r}")


def main(argv: list[str]) -> int:

    args = build_parser().parse_args(argv)
    cell, options = options_from(args)
    options.check_tools()
    if not args.reference.exists():
        raise UserError(f"--reference {args.reference} does not exist: give the master file or the folder of masters")
    heatmaps = OutputClaims()
    rows, status = rows_per_file(args.images, lambda name, base: check_file(name, base, args, cell, options, heatmaps),
                                 "op4ksr fidelity: cannot check", args.json)
    if rows and not args.json:
        _print_table(rows)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
