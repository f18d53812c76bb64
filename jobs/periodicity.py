"""`op4ksr periodicity`: score any images for periodic (token-grid) artifacts, standalone."""
from __future__ import annotations

import argparse
import glob
import sys
from pathlib import Path

from jobs.common import real_path, rows_per_file
from op4ksr.errors import UserError
from op4ksr.images.output_names import OutputClaims, collision_error

DESCRIPTION = """\
Score images for periodic artifacts at a given period (the token period of patch-free
upscalers is 32 px): the autocorrelation periodicity score of docs/PERIODICITY.md.

With --reference, each image is scored as the pipeline scores its outputs: ap_excess, the
image's periodicity above that of its input's bicubic upscale to the same size, so that
periodic scenes (brick, fences, wood grain, halftone) and bicubic enlargements are not
flagged; flagged = ap_excess > threshold. --reference is the input file (one image), or a
folder in which each image's input has the same relative name (below the images' common
folder), any image extension.

Without --reference there is no input to compare with: each image's own, absolute score
(ap_score) is shown, and a naturally periodic scene scores high too; flagged = ap_score >
threshold. The dominant period is the strongest autocorrelation peak between 8 and 128 px
along x or y. A large image is scored in tiles of up to 1024 px that cover it, and the worst
tile counts (worst_tile in --json), so a pattern confined to one corner is seen; --heatmap
draws that tile's autocorrelation.

Prints a table, or one JSON object per line with --json. An unreadable file (a symlink loop,
a missing reference, an image smaller than the period) is reported on one line on stderr and
the others go on; the exit status is then 1. A --period larger than a scored tile (1024 px) is
refused, and a reference whose aspect ratio differs from the image's beyond one input pixel of
rounding is scored with a warning (the excess then compares different pictures).

examples:
  op4ksr periodicity out/images/ --reference in/
  op4ksr periodicity upscaled.jpg --reference original.jpg --json
  op4ksr periodicity a.png b.png --heatmap qa/     # absolute scores; qa/a.autocorr.png, qa/b.autocorr.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr periodicity", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE",
                        help="image files (anything Pillow reads), or folders of them (walked recursively)")
    parser.add_argument("--reference", type=Path, metavar="PATH",
                        help="the input the images were upscaled from: a file, or a folder matched by relative name")
    parser.add_argument("--period", type=int, default=None, metavar="PX",
                        help="period to score in px, at least 2 (default: report.period_px of configs/default.yaml, "
                             "else 32, the token period of F16 models)")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="flag images whose score exceeds T (default: report.threshold of configs/default.yaml)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line instead of a table")
    parser.add_argument("--heatmap", type=Path, metavar="DIR",
                        help="write DIR/<name>.autocorr.png (a folder's images keep its layout): the autocorrelation "
                             "around the origin, period lags marked")
    return parser


def load_rgb(path: Path):
    """(1, 3, H, W) float32 in [0, 1] of an image file, decoded as the pipeline decodes its inputs."""
    from op4ksr.images.codec import decode_image

    return decode_image(path.read_bytes()).rgb[None]


def score(x, x_lr, period: int, threshold: float, max_k: int) -> tuple[dict, tuple[int, int, int, int]]:
    """(row, box): the image's score record from the worst of the tiles covering it (the library's
    score_tiles, as the pipeline's quality report: ap_excess over x_lr's bicubic upscale, or the
    absolute score when x_lr is None), and that tile's (top, left, height, width) for the heatmap."""
    from op4ksr.quality.periodicity_report import score_tiles

    tiles = score_tiles(x, x_lr, period, max_k=max_k)
    worst = int(tiles.worst()[0, 0])
    top, left, th, tw = tiles.boxes[worst]
    out, dominant = float(tiles.score_out[0, worst]), int(tiles.dominant[0, worst])
    if x_lr is None:
        row = {"period_px": period, "ap_score": out, "dominant_period_px": dominant, "flagged": out > threshold}
    else:
        excess = float(tiles.excess[0, worst])
        row = {"period_px": period, "ap_score_out": out, "ap_score_in": float(tiles.score_in[0, worst]),
               "ap_excess": excess, "dominant_period_px": dominant, "flagged": excess > threshold}
    row |= {"tiles": len(tiles.boxes), "worst_tile": f"{tw}x{th}+{left}+{top}"}
    return row, (top, left, th, tw)


def reference_for(image: Path, reference: Path, base: Path) -> Path:
    """The input file of `image`: `reference` itself, or the file under the folder `reference` with the
    image's path relative to `base`, with any image extension. UserError when there is not exactly one."""
    from op4ksr.images.folders import IMAGE_EXTENSIONS

    if not reference.is_dir():
        return reference
    relative = image.resolve().relative_to(base)
    exact = reference / relative
    if exact.is_file():
        return exact
    found = sorted(p for p in exact.parent.glob(f"{glob.escape(exact.stem)}.*")
                   if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if len(found) != 1:
        what = "no image" if not found else f"{len(found)} images ({', '.join(p.name for p in found)})"
        raise UserError(f"--reference {reference}: {what} named {relative.with_suffix('')}.* for {image}; "
                        "give the folder of the inputs, laid out as the outputs are")
    return found[0]


def write_heatmap(rho, path: Path, period: int, max_k: int, title: str) -> None:
    """PNG with one panel per autocorrelation map: lags within (max_k + 1) * period of the origin,
    circles at the scored lags k * period along x and y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from op4ksr.quality.periodicity import MAPS

    h, w = rho.shape[-2:]
    r = min((max_k + 1) * period, h // 2, w // 2)
    lags = [k * period for k in range(-max_k, max_k + 1) if k and abs(k * period) <= r]
    fig, axes = plt.subplots(1, rho.shape[1], figsize=(5.5 * rho.shape[1], 5), squeeze=False, layout="constrained")
    near = max(1, period // 2)  # the central peak would wash out the colour scale: scale by the lags beyond it
    for ax, rho_map, name in zip(axes[0], rho[0], MAPS):
        centred = torch.roll(rho_map, shifts=(r, r), dims=(0, 1))[: 2 * r + 1, : 2 * r + 1]  # origin at (r, r)
        peaks = centred.clone()
        peaks[max(0, r - near + 1) : r + near, max(0, r - near + 1) : r + near] = 0
        vmax = float(peaks.abs().max()) or 1.0
        im = ax.imshow(centred.numpy(), cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       extent=(-r - 0.5, r + 0.5, r + 0.5, -r - 0.5))
        ax.scatter(lags + [0] * len(lags), [0] * len(lags) + lags, s=60, facecolors="none", edgecolors="k")
        ax.set(xlabel="lag x (px)", ylabel="lag y (px)", title=f"{name} map; circles at k x {period} px")
        fig.colorbar(im, ax=ax, shrink=0.8, label="rho")
    fig.suptitle(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _defaults(args) -> tuple[int, float, int]:
    from jobs.config import load_config

    from op4ksr.quality.periodicity import DEFAULT_CROP

    if args.period is not None and args.period < 2:
        raise UserError(f"--period must be at least 2 px, got {args.period}")
    if args.period is not None and args.period > DEFAULT_CROP:
        raise UserError(f"--period {args.period} px is larger than a scored tile ({DEFAULT_CROP} px a side): no lag "
                        "of it fits in one; give the period of the grid you look for (32 for F16 models)")
    cfg = load_config()
    period = args.period if args.period is not None else (cfg.report.period_px or 32)
    threshold = cfg.report.threshold if args.threshold is None else args.threshold
    return int(period), float(threshold), int(cfg.report.max_lag_multiple)


def _print_table(rows: list[dict], referenced: bool) -> None:
    width = max([len("path")] + [len(r["path"]) for r in rows])
    if referenced:
        print(f"{'path':<{width}}  {'size':>11}  {'excess':>7}  {'score':>7}  {'input':>7}  {'dominant':>8}  flagged")
    else:
        print("absolute scores (no --reference): each image's own periodicity, not its excess over an input")
        print(f"{'path':<{width}}  {'size':>11}  {'score':>7}  {'dominant':>8}  flagged")
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        scores = (f"{r['ap_excess']:7.4f}  {r['ap_score_out']:7.4f}  {r['ap_score_in']:7.4f}" if referenced
                  else f"{r['ap_score']:7.4f}")
        print(f"{r['path']:<{width}}  {size:>11}  {scores}  {r['dominant_period_px']:>8}  "
              f"{'yes' if r['flagged'] else 'no'}")


def _check_sizes(name: str, x, x_lr, ref: Path | None, period: int) -> None:
    """ValueError (that image fails alone) when it is smaller than `period`; a warning line when its
    reference has another aspect ratio than rounding explains (one input pixel either way)."""
    h, w = x.shape[-2:]
    if period > min(h, w):
        raise ValueError(f"its {w}x{h} px are smaller than the period of {period} px: no lag of it fits")
    if x_lr is None:
        return
    h_lr, w_lr = x_lr.shape[-2:]
    if abs(w - w_lr * h / h_lr) > 1 + h / h_lr:
        print(f"op4ksr periodicity: warning: {name} is {w}x{h} but its reference {ref} is {w_lr}x{h_lr}, another "
              "aspect ratio: scored anyway, but its excess compares different pictures", file=sys.stderr)


def _score_file(name: str, args, base: Path, period: int, threshold: float, max_k: int,
                heatmaps: OutputClaims) -> dict:
    """The table row of one image file; UserError or the decoder's error when it cannot be scored.
    Its heatmap is named as an output is (the image's path relative to `base`, extension replaced), and
    refused by the outputs' rule when an earlier image claimed that name (a.jpg, a.png)."""
    path = Path(name)
    heatmap = None
    if args.heatmap:
        heatmap = args.heatmap / real_path(path).relative_to(base).with_suffix(".autocorr.png")
        owner = heatmaps.claim(str(heatmap), name)
        if owner is not None:
            raise collision_error(str(heatmap), owner)
    x = load_rgb(path)
    row = {"path": name, "width": x.shape[-1], "height": x.shape[-2]}
    x_lr, ref = None, None
    if args.reference is not None:
        ref = reference_for(path, args.reference, base)
        x_lr = load_rgb(ref)
        row["reference"] = str(ref)
    _check_sizes(name, x, x_lr, ref, period)
    scores, (top, left, th, tw) = score(x, x_lr, period, threshold, max_k)
    if heatmap is not None:
        from op4ksr.quality.periodicity import periodicity_autocorr

        write_heatmap(periodicity_autocorr(x[..., top : top + th, left : left + tw], period), heatmap, period, max_k,
                      name)
    return row | scores


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    period, threshold, max_k = _defaults(args)
    if args.reference is not None and not args.reference.exists():
        raise UserError(f"--reference {args.reference} does not exist: give the input file or the folder of inputs")
    heatmaps = OutputClaims()
    rows, status = rows_per_file(args.images, lambda name, base: _score_file(name, args, base, period, threshold,
                                                                             max_k, heatmaps),
                                 "op4ksr periodicity: cannot score", args.json)
    if rows and not args.json:
        _print_table(rows, args.reference is not None)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
