"""RFR calibration: sweep the RoPE base scale and pick the one with the least periodic excess.

The paper names dataset-specific calibration as the limit of its artifact suppression; this
sweep makes it a measurement: for each `rfr.scale`, upscale sample images and average the
quality report (docs/PERIODICITY.md). The pick is the lowest mean ap_excess among the scales whose
mean lr_consistency_psnr is within `psnr_tolerance_db` of the best, so fidelity is not traded
for a quieter autocorrelation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from op4ksr.model import OP4KSR
from op4ksr.quality.periodicity_report import DEFAULT_THRESHOLD, quality_report
from op4ksr.sizing import output_size


@dataclass(frozen=True)
class ScaleResult:
    rfr_scale: float
    mean_ap_excess: float
    mean_lr_consistency_psnr: float
    flagged: int
    images: int


def sweep_rfr(
    model: OP4KSR,
    images: list[torch.Tensor],
    scales: list[float],
    *,
    mode: str = "base",
    sr_scale: float = 4,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[ScaleResult]:
    """One ScaleResult per RFR scale, over `images` (each (3, h, w) in [0, 1]); restores the model's RFR."""
    if not images or not scales:
        raise ValueError(f"need at least one image and one scale, got {len(images)} images and scales {scales}")
    original = (model.transformer.config.rfr_mode, model.transformer.config.rfr_scale)
    results = []
    try:
        for scale in scales:
            model.transformer.set_rfr(mode, float(scale))
            reports = []
            for image in images:
                x_lr = image[None]
                x_sr = model.upscale(x_lr, output_size(*image.shape[-2:], scale=sr_scale))
                reports += quality_report(x_sr, x_lr.to(x_sr.device), model.token_period_px, threshold)
            results.append(ScaleResult(
                float(scale),
                sum(r.ap_excess for r in reports) / len(reports),
                sum(r.lr_consistency_psnr for r in reports) / len(reports),
                sum(r.flagged for r in reports),
                len(reports),
            ))
    finally:
        model.transformer.set_rfr(*original)
    return results


def pick_scale(results: list[ScaleResult], psnr_tolerance_db: float = 0.5) -> ScaleResult:
    """The lowest mean ap_excess among scales within `psnr_tolerance_db` of the best mean PSNR."""
    best_psnr = max(r.mean_lr_consistency_psnr for r in results)
    eligible = [r for r in results if r.mean_lr_consistency_psnr >= best_psnr - psnr_tolerance_db]
    return min(eligible, key=lambda r: (r.mean_ap_excess, -r.mean_lr_consistency_psnr))


def config_snippet(mode: str, choice: ScaleResult) -> str:
    """YAML to merge into a job config (`--config`) that applies the chosen RFR setting."""
    return (f"# chosen by op4ksr calibrate: mean ap_excess {choice.mean_ap_excess:.4f}, "
            f"mean lr_consistency_psnr {choice.mean_lr_consistency_psnr:.2f} dB over {choice.images} images\n"
            f"rfr:\n  mode: {mode}\n  scale: {choice.rfr_scale:g}\n")
