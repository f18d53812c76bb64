"""Scoring SR methods on a benchmark folder (op4ksr.evaluation.benchset layout): full-reference metrics on Y,
the periodicity quality report, baselines, and the model run patch-free vs patch-based.

Conventions (those of the SR literature, e.g. BasicSR): every output is quantised to 8 bits as it
would be saved; PSNR and SSIM are computed on Y of BT.601 YCbCr (16..235), with `scale` pixels
cropped from each border; SSIM uses an 11x11 Gaussian window of sigma 1.5.
No no-reference metric (PIQE/NIQE) is computed: none is available offline here.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from op4ksr.evaluation.benchset import read_manifest
from op4ksr.imageops import bicubic_resize
from op4ksr.quality.periodicity_report import DEFAULT_THRESHOLD
from op4ksr.inference.tiling import upscale_tiled

TINY_TRAINED = Path(__file__).resolve().parents[1] / "assets" / "tiny-trained"  # the shipped demo checkpoint


@dataclass
class BenchItem:
    name: str
    hr: torch.Tensor  # (1, 3, H, W) float in [0, 1]
    lr: torch.Tensor  # (1, 3, h, w)


def load_bench(bench: Path) -> tuple[dict, list[BenchItem]]:
    """(manifest, items) of a benchmark folder."""
    from op4ksr.images.folders import read_image

    manifest = read_manifest(bench)
    items = [BenchItem(it["name"], read_image(bench / it["hr"]).float()[None] / 255,
                       read_image(bench / it["lr"]).float()[None] / 255) for it in manifest["items"]]
    return manifest, items


def quantise(x: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] rounded to 8-bit levels, as the image would be saved."""
    return (x.clamp(0, 1) * 255).round() / 255


def y_channel(x: torch.Tensor) -> np.ndarray:
    """(H, W) float64 Y of BT.601 YCbCr in [16/255, 235/255] from x (1, 3, H, W) RGB in [0, 1]."""
    r, g, b = x[0].double().numpy()
    return (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255


def psnr_ssim_y(sr: torch.Tensor, hr: torch.Tensor, border: int) -> tuple[float, float]:
    """(PSNR dB, SSIM) on Y with `border` px cropped from each side."""
    from op4ksr.extras import require

    metrics = require("skimage.metrics", "eval", "PSNR/SSIM scoring (op4ksr eval)")
    peak_signal_noise_ratio, structural_similarity = metrics.peak_signal_noise_ratio, metrics.structural_similarity

    a, b = y_channel(sr), y_channel(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    psnr = peak_signal_noise_ratio(b, a, data_range=1.0)
    ssim = structural_similarity(b, a, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False)
    return float(psnr), float(ssim)


def colour_error(sr: torch.Tensor, hr: torch.Tensor) -> float:
    """Largest difference of a channel's mean between sr and hr (1, 3, H, W) in [0, 1]: colour drift
    (the report's colour_shift, against the ground truth instead of the input)."""
    from op4ksr.quality.report import colour_shift

    return float(colour_shift(sr, hr).max())


def lanczos_resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """x (1, 3, h, w) resized to size=(H, W) with Pillow's Lanczos (on 8-bit RGB)."""
    from PIL import Image

    arr = (x[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = np.asarray(Image.fromarray(arr).resize((size[1], size[0]), Image.LANCZOS), dtype=np.float32) / 255
    return torch.from_numpy(out).permute(2, 0, 1)[None]


def parse_fidelity(step: str):
    """op4ksr.fidelity.Fidelity of a method suffix: mode[:N], N = wavelet levels or backproject iterations."""
    from op4ksr.fidelity import Fidelity

    mode, _, n = step.partition(":")
    if not n:
        return Fidelity(mode)
    return Fidelity(mode, levels=int(n)) if mode == "wavelet" else Fidelity(mode, iterations=int(n))


def run_method(method: str, item: BenchItem, model=None, tile: int = 32, overlap: int = 8) -> torch.Tensor:
    """The 8-bit-quantised SR output (1, 3, H, W) of `method` for one benchmark item.

    `base+mode[:N]` runs `base` with that fidelity step (op4ksr.fidelity): for a baseline it
    corrects the baseline's output; for the model (`model+none`: no step) it replaces the model's
    configured fidelity for this call. A plain `model` runs the model as configured."""
    size = tuple(item.hr.shape[-2:])
    if "+" in method:
        return _run_with_fidelity(method, item, model, tile, overlap)
    if method == "bicubic":
        out = bicubic_resize(item.lr, size)
    elif method == "lanczos":
        out = lanczos_resize(item.lr, size)
    elif method == "model":
        out = model.upscale(item.lr, size).cpu()
    elif method == "model-tiled":
        out = upscale_tiled(model, item.lr, size, tile, overlap, device="cpu")
    else:
        raise ValueError(f"unknown method {method!r}")
    return quantise(out.float())


def _run_with_fidelity(method: str, item: BenchItem, model, tile: int, overlap: int) -> torch.Tensor:
    from op4ksr.fidelity import apply_fidelity

    base, step = method.split("+", 1)
    fidelity = parse_fidelity(step)
    if base in ("model", "model-tiled"):
        saved, model.fidelity = model.fidelity, fidelity
        try:
            return run_method(base, item, model, tile, overlap)
        finally:
            model.fidelity = saved
    out = run_method(base, item, model, tile, overlap)
    x_up = bicubic_resize(item.lr, tuple(item.hr.shape[-2:]))
    return quantise(apply_fidelity(out, item.lr, x_up, fidelity))


def evaluate(items: list[BenchItem], methods: list[str], scale: int, model=None, tile: int = 32,
             overlap: int = 8, period_px: int = 32, threshold: float = DEFAULT_THRESHOLD) -> tuple[list[dict], dict]:
    """(rows, outputs): one metrics row per (image, method), and outputs[method][image] for pictures."""
    from op4ksr.quality.periodicity_report import quality_report

    rows, outputs = [], {m: {} for m in methods}
    for item in items:
        for method in methods:
            t0 = time.perf_counter()
            sr = run_method(method, item, model, tile, overlap)
            seconds = time.perf_counter() - t0
            psnr, ssim = psnr_ssim_y(sr, item.hr, scale)
            report = quality_report(sr, item.lr, period_px, threshold)[0].as_dict()
            rows.append({"image": item.name, "method": method, "psnr_y": psnr, "ssim_y": ssim,
                         "lr_consistency_psnr": report["lr_consistency_psnr"], "ap_excess": report["ap_excess"],
                         "ap_score_out": report["ap_score_out"], "flagged": report["flagged"],
                         "colour_error": colour_error(sr, item.hr), "seconds": seconds})
            outputs[method][item.name] = sr
    return rows, outputs


def summarise(rows: list[dict]) -> list[dict]:
    """Mean of each metric per method (flagged as a fraction), in first-seen method order."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    out = []
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in
                ("psnr_y", "ssim_y", "lr_consistency_psnr", "ap_excess", "seconds")}
        out.append({"method": m, "images": len(sel), **mean, "flagged": sum(r["flagged"] for r in sel) / len(sel),
                    "min_lr_consistency_psnr": min(r["lr_consistency_psnr"] for r in sel),
                    "max_colour_error": max(r["colour_error"] for r in sel)})
    return out


def group_of(image: str) -> str:
    """'textures' for the generated textures of op4ksr.evaluation.benchset, else 'photos'."""
    return "textures" if image.startswith("texture-") else "photos"


def summarise_groups(rows: list[dict]) -> dict[str, list[dict]]:
    """summarise() of the photos and of the textures apart: {'photos': [...], 'textures': [...]}."""
    groups = {}
    for r in rows:
        groups.setdefault(group_of(r["image"]), []).append(r)
    return {g: summarise(sel) for g, sel in sorted(groups.items())}


def markdown_table(summary: list[dict]) -> str:
    """The per-method summary as a Markdown table."""
    head = ("| method | images | PSNR-Y dB | SSIM-Y | LR-consistency PSNR dB (min) | max colour error | ap_excess "
            "| flagged | s/image |")
    lines = [head, "|" + "---|" * 9]
    for s in summary:
        lines.append(f"| {s['method']} | {s['images']} | {s['psnr_y']:.2f} | {s['ssim_y']:.4f} | "
                     f"{s['lr_consistency_psnr']:.2f} ({s['min_lr_consistency_psnr']:.2f}) | {s['max_colour_error']:.3f} | {s['ap_excess']:.4f} | {s['flagged']:.0%} | {s['seconds']:.3f} |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def contact_sheet(items: list[BenchItem], outputs: dict, cell: int = 192) -> "Image.Image":
    """A PIL image: one row per item; columns LR (nearest), each method's output, HR; labelled."""
    from PIL import Image, ImageDraw

    columns = ["LR"] + list(outputs) + ["HR"]
    label_h = 14
    sheet = Image.new("RGB", (cell * len(columns), (cell + label_h) * len(items)), "white")
    draw = ImageDraw.Draw(sheet)
    for row, item in enumerate(items):
        for col, name in enumerate(columns):
            img = item.lr if name == "LR" else item.hr if name == "HR" else outputs[name][item.name]
            arr = (img[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            tile = Image.fromarray(arr).resize((cell, cell), Image.NEAREST if name == "LR" else Image.LANCZOS)
            y = row * (cell + label_h)
            sheet.paste(tile, (col * cell, y + label_h))
            draw.text((col * cell + 2, y + 1), f"{item.name}: {name}"[:32], fill="black")
    return sheet


def write_report(out: Path, rows: list[dict], items: list[BenchItem], outputs: dict, title: str,
                 sheet_rows: int = 4) -> list[dict]:
    """Write results.csv (per image), summary.csv, results.md and contact_sheet.png; returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    summary = summarise(rows)
    _write_csv(out / "results.csv", rows)
    _write_csv(out / "summary.csv", summary)
    groups = "".join(f"\n## {g}\n\n{markdown_table(part)}" for g, part in summarise_groups(rows).items())
    (out / "results.md").write_text(f"# {title}\n\n{markdown_table(summary)}{groups}")
    if sheet_rows > 0:
        contact_sheet(items[:sheet_rows], outputs).save(out / "contact_sheet.png")
    return summary
