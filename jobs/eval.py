"""`op4ksr eval`: score a model and the baselines on a benchmark built by `op4ksr bench-build`."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from jobs.common import add_config_arguments, add_model_argument, config_from_args, model_from_config
from op4ksr.errors import UserError

DESCRIPTION = """\
Run the model patch-free (the whole image in one forward pass), the same model patch-based
(LR tiles of eval.tile px overlapping by eval.tile_overlap px, blended linearly, as earlier SR
methods run) and the baselines in eval.baselines (bicubic, lanczos) on every benchmark image.
Reports PSNR and SSIM on Y (border cropped by the scale), LR-consistency PSNR, ap_excess and
the flagged share (threshold report.threshold) per method; writes results.md, results.csv
(per image), summary.csv and contact_sheet.png under --out. No no-reference metric is
computed (none runs offline here).

--model takes a checkpoint folder, a training run folder (its latest checkpoint), a preset
(tiny: random weights) or tiny-trained (the shipped checkpoint, the default). rfr.mode and
rfr.scale override the checkpoint's saved RFR, as in every command. With peer.kind set, another
upscaler is scored as "model" instead (a spandrel checkpoint or a command line: peer.*).

examples:
  op4ksr eval --bench bench/heldout-x4 --model tiny-trained
  op4ksr eval --bench bench/heldout-x4 --model runs/train/checkpoints/step-0002000 rfr.mode=base rfr.scale=2
  op4ksr eval --bench bench/heldout-x4 eval.tile=0 peer.kind=command \
      peer.command="python bench/realesrgan_ncnn.py {input} {output} {scale}"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="op4ksr eval", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bench", required=True, type=Path, metavar="DIR", help="benchmark folder (manifest.json)")
    add_model_argument(parser)
    parser.add_argument("--out", type=Path, metavar="DIR", help="report folder (default: eval.out or <bench>/eval/<model>)")
    add_config_arguments(parser)
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_intermixed_args(argv)
    cfg = config_from_args(args)

    from jobs.specs import peer_spec
    from op4ksr.evaluation.evaluate import evaluate, load_bench, write_report

    try:
        manifest, items = load_bench(args.bench)
    except FileNotFoundError as err:
        raise UserError(str(err)) from None
    peer = peer_spec(cfg)
    if peer is None:
        model = model_from_config(cfg)
        name = Path(str(cfg.model.path or cfg.model.preset)).name
    else:  # another upscaler scored as "model" (actors/peers.py): spandrel checkpoint or command line
        from actors.peers import load_peer

        model, name = load_peer(peer, cfg.model.device), f"peer-{peer.kind}"
    methods = list(cfg.eval.baselines) + ["model"] + (["model-tiled"] if int(cfg.eval.tile) > 0 else [])
    period = int(cfg.report.period_px or model.token_period_px)
    rows, outputs = evaluate(items, methods, int(manifest["scale"]), model, int(cfg.eval.tile),
                             int(cfg.eval.tile_overlap), period, float(cfg.report.threshold))
    out = args.out or (Path(cfg.eval.out) if cfg.eval.out else args.bench / "eval" / name)
    title = f"{name} on {args.bench} (x{manifest['scale']}, {len(items)} images, {model.model_id})"
    summary = write_report(out, rows, items, outputs, title, int(cfg.eval.contact_sheet))
    print((out / "results.md").read_text())
    print(json.dumps({"out": str(out), "summary": summary}))
    return 0
