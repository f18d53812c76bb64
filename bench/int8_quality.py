"""int8 weight-only against the float model on the held-out photos (tiny-trained); prints one JSON object.

For each held-out photo (offline:heldout's four: coffee, rocket, chelsea, camera; LR = antialiased
bicubic x4 downscale), the output of tiny-trained in float32 is the reference; bf16, int8 (float32
activations) and int8 in bf16 are compared with it (PSNR, RGB), with the model's own output
(fidelity none: nothing hides the error) and with the saved fidelity step (what a run writes).
PSNR-Y against the HR photo is given for each too. Streaming (offload=blocks) is not a variant:
its output equals the resident one exactly (tests/op4ksr/test_offload.py).

usage: python bench/int8_quality.py [--json-out int8_quality.json]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from op4ksr.evaluation.benchset import HELDOUT_PHOTOS, _photo  # noqa: E402
from op4ksr.fidelity import Fidelity  # noqa: E402
from op4ksr.imageops import bicubic_resize, luminance, psnr  # noqa: E402
from op4ksr.model import OP4KSR  # noqa: E402
from op4ksr.presets import SHIPPED_CHECKPOINTS  # noqa: E402

VARIANTS = {"float32": (torch.float32, "dtype"), "bf16": (torch.bfloat16, "dtype"),
            "int8": (torch.float32, "int8"), "int8_bf16": (torch.bfloat16, "int8")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json-out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    models = {name: OP4KSR.from_pretrained(SHIPPED_CHECKPOINTS["tiny-trained"], dtype=dtype, weights=weights)
              for name, (dtype, weights) in VARIANTS.items()}
    saved = models["float32"].fidelity
    rows = []
    for photo in HELDOUT_PHOTOS:
        img = torch.from_numpy(_photo(photo)).float() / 255
        hr = (img[..., None].expand(-1, -1, 3) if img.ndim == 2 else img[..., :3]).permute(2, 0, 1)[None]
        h, w = (s - s % 4 for s in hr.shape[-2:])
        hr = hr[..., :h, :w]
        lr = bicubic_resize(hr, (h // 4, w // 4)).clamp(0, 1)
        row = {"photo": photo, "size": f"{w}x{h}"}
        for fidelity_name, fidelity in (("model_only", Fidelity()), ("saved_fidelity", saved)):
            outs = {}
            for name, model in models.items():
                model.fidelity = fidelity
                outs[name] = model.upscale(lr, (h, w))
            row[fidelity_name] = {
                "psnr_vs_float32_db": {n: round(float(psnr(o, outs["float32"])), 2) for n, o in outs.items() if n != "float32"},
                "psnr_y_vs_hr_db": {n: round(float(psnr(luminance(o), luminance(hr))), 3) for n, o in outs.items()}}
        rows.append(row)
    report = {"bench": "int8_quality", "model": "tiny-trained", "torch": torch.__version__, "photos": rows,
              "note": "the tiny model adds nothing over bicubic + back-projection (docs/QUALITY.md): these "
                      "figures measure int8's error on a trained network, not quality"}
    text = json.dumps(report, indent=2)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    print(text)
    return report


if __name__ == "__main__":
    main()
