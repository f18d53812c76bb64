"""`op4ksr periodicity`: score any images for periodic (token-grid) artifacts, standalone."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from op4ksr.errors import UserError

DESCRIPTION = """\
Score images for periodic artifacts at a given period (the token period of patch-free
upscalers is 32 px): the autocorrelation periodicity score of docs/PERIODICITY.md.

The command has no input image to compare with, so it reports each image's own score
(ap_score), not the pipeline's ap_excess over its input: a naturally periodic scene (brick,
fences, halftone) scores high here too. flagged = ap_score > threshold. The dominant period
is the strongest autocorrelation peak between 8 and 128 px along x or y. A large image is
scored in tiles of up to 1024 px that cover it, and the worst tile counts (worst_tile in --json),
so a pattern confined to one corner is seen; --heatmap draws that tile's autocorrelation.

Prints a table, or one JSON object per line with --json. An unreadable file is reported on
one line on stderr and the others go on; the exit status is then 1.

examples:
  op4ksr periodicity out/*.png
  op4ksr periodicity upscaled.jpg --period 32 --json
  op4ksr periodicity a.png b.png --heatmap qa/     # qa/a.autocorr.png, qa/b.autocorr.png
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr periodicity", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (anything Pillow reads)")
    parser.add_argument("--period", type=int, default=None, metavar="PX",
                        help="period to score in px (default: report.period_px of configs/default.yaml, else 32)")
    parser.add_argument("--threshold", type=float, default=None, metavar="T",
                        help="flag images whose score exceeds T (default: report.threshold of configs/default.yaml)")
    parser.add_argument("--json", action="store_true", help="one JSON object per image and line instead of a table")
    parser.add_argument("--heatmap", type=Path, metavar="DIR",
                        help="write DIR/<name>.autocorr.png: the autocorrelation around the origin, period lags marked")
    return parser


def load_rgb(path: Path):
    """(1, 3, H, W) float32 in [0, 1] of an image file, converted to RGB."""
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        a = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(a).permute(2, 0, 1)[None].contiguous()


def score(x, period: int, threshold: float, max_k: int) -> tuple[dict, object]:
    """(row, rho): the image's score record, from the worst of the tiles covering it (as the quality
    report scores outputs: a pattern in one corner counts), and that tile's autocorrelation (1, M, h, w)."""
    from op4ksr.periodicity import (DEFAULT_CROP, dominant_period_from_autocorr, periodicity_autocorr,
                                    periodicity_from_autocorr, tile_grid)

    tops, lefts, th, tw = tile_grid(*x.shape[-2:], DEFAULT_CROP, period)
    worst = None
    for top in tops:
        for left in lefts:
            rho = periodicity_autocorr(x[..., top : top + th, left : left + tw], period)
            tile_score = float(periodicity_from_autocorr(rho, period, max_k)[0])
            if worst is None or tile_score > worst[0]:
                worst = (tile_score, rho, top, left)
    ap_score, rho, top, left = worst
    row = {"period_px": period, "ap_score": ap_score, "dominant_period_px": int(dominant_period_from_autocorr(rho)[0]),
           "flagged": ap_score > threshold, "tiles": len(tops) * len(lefts), "worst_tile": f"{tw}x{th}+{left}+{top}"}
    return row, rho


def write_heatmap(rho, path: Path, period: int, max_k: int, title: str) -> None:
    """PNG with one panel per autocorrelation map: lags within (max_k + 1) * period of the origin,
    circles at the scored lags k * period along x and y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from op4ksr.periodicity import MAPS

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

    cfg = load_config()
    period = args.period or cfg.report.period_px or 32
    threshold = cfg.report.threshold if args.threshold is None else args.threshold
    return int(period), float(threshold), int(cfg.report.max_lag_multiple)


def _print_table(rows: list[dict]) -> None:
    width = max([len("path")] + [len(r["path"]) for r in rows])
    print(f"{'path':<{width}}  {'size':>11}  {'score':>7}  {'dominant':>8}  flagged")
    for r in rows:
        size = f"{r['width']}x{r['height']}"
        print(f"{r['path']:<{width}}  {size:>11}  {r['ap_score']:7.4f}  {r['dominant_period_px']:>8}  "
              f"{'yes' if r['flagged'] else 'no'}")


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    period, threshold, max_k = _defaults(args)
    if period < 2:
        raise UserError(f"--period must be at least 2 px, got {period}")
    rows, status = [], 0
    for name in args.images:
        path = Path(name)
        try:
            x = load_rgb(path)
        except Exception as err:  # noqa: BLE001 - one unreadable file must not stop the others
            print(f"op4ksr periodicity: cannot read {name}: {type(err).__name__}: {err}", file=sys.stderr)
            status = 1
            continue
        row, rho = score(x, period, threshold, max_k)
        row = {"path": name, "width": x.shape[-1], "height": x.shape[-2]} | row
        if args.heatmap:
            write_heatmap(rho, args.heatmap / f"{path.stem}.autocorr.png", period, max_k, name)
        if args.json:
            print(json.dumps(row), flush=True)
        rows.append(row)
    if rows and not args.json:
        _print_table(rows)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
