"""`op4ksr calibrate`: sweep rfr.scale on sample images and write the best as a config snippet."""
from __future__ import annotations

import argparse
from pathlib import Path

from jobs.common import add_config_arguments, add_model_argument, config_from_args, model_from_config
from op4ksr.errors import UserError

DESCRIPTION = """\
Run the model at each RFR scale on sample images (treated as low-resolution inputs), print mean
ap_excess and lr_consistency_psnr per scale, pick the scale with the lowest ap_excess among
those within --psnr-tolerance dB of the best PSNR, write it as a config snippet you can pass
with --config, and draw ap_excess against scale as a PNG.

example:
  op4ksr calibrate --images samples/ --scales 0.25,0.5,1,2,4,8 --model /models/op4ksr-flux-dev
"""


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="op4ksr calibrate", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder of sample images")
    parser.add_argument("--scales", default="0.25,0.5,1,2,4,8", help="comma-separated RFR scales")
    parser.add_argument("--mode", choices=["base", "ntk"], default="base", help="RFR mode to sweep")
    add_model_argument(parser)
    parser.add_argument("--max-images", type=int, default=16, help="use at most this many images")
    parser.add_argument("--psnr-tolerance", type=float, default=0.5, help="dB below the best PSNR still eligible")
    parser.add_argument("--out", type=Path, default=Path("calibration"), help="folder for the snippet and chart")
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--scales must be numbers separated by commas, got {args.scales!r}") from None
    cfg = config_from_args(args)

    from op4ksr.evaluation.calibrate import config_snippet, pick_scale, sweep_rfr
    from op4ksr.evaluation.calibration_files import load_sample_images, plot_sweep

    images = load_sample_images(args.images, cfg.input.extensions, args.max_images)
    results = sweep_rfr(model_from_config(cfg), images, scales, mode=args.mode,
                        sr_scale=float(cfg.sr.scale), threshold=float(cfg.report.threshold))
    choice = pick_scale(results, args.psnr_tolerance)
    print(f"{'rfr.scale':>10}  {'ap_excess':>10}  {'lr_psnr_dB':>10}  flagged")
    for r in results:
        mark = "  <- chosen" if r is choice else ""
        print(f"{r.rfr_scale:>10g}  {r.mean_ap_excess:>10.4f}  {r.mean_lr_consistency_psnr:>10.2f}  "
              f"{r.flagged}/{r.images}{mark}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "rfr.yaml").write_text(config_snippet(args.mode, choice))
    plot_sweep(results, choice, args.out / "rfr_sweep.png")
    print(f"wrote {args.out / 'rfr.yaml'} (use with --config) and {args.out / 'rfr_sweep.png'}")
    return 0
