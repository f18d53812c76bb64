"""Seconds per 4096x4096 periodicity quality report on CPU (and CUDA when present), as JSON.

The report scores tiles of op4ksr.quality.periodicity.DEFAULT_CROP px a side (multiples of the period)
covering the whole image rather than a resized image, so a period-32 pattern must survive: the
bench also checks that a faint period-32 tile pattern injected into a 4096x4096 image is flagged
at its period, over the whole image and when confined to its top-left corner (CORNER px square),
and that the clean image is not.

    .venv/bin/python bench/periodicity.py [--size 4096 4096] [--repeats 5] [--threads N]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root: jobs.config

from jobs.config import load_config  # noqa: E402
from op4ksr.quality.periodicity import DEFAULT_CROP  # noqa: E402
from op4ksr.quality.periodicity_report import quality_report  # noqa: E402

CORNER = 768  # px; side of the corner the confined pattern covers (not aligned with the report's tiles)


def test_images(size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_lr, x_sr clean, x_sr with a period-32 pattern, x_sr with it in the top-left corner only):
    a smooth random scene with fine texture, its 4x bicubic-down input, and the scene plus a random
    32x32 tile repeated at RMS 0.01 (everywhere, or within CORNER px of the top-left corner)."""
    g = torch.Generator().manual_seed(seed)
    h, w = size
    coarse = torch.rand(1, 3, h // 64, w // 64, generator=g)
    scene = F.interpolate(coarse, size=size, mode="bicubic", align_corners=False)
    scene = (0.2 + 0.6 * scene + 0.02 * torch.randn(1, 1, h, w, generator=g)).clamp(0, 1)  # (1, 3, H, W)
    x_lr = F.interpolate(scene, size=(h // 4, w // 4), mode="bicubic", antialias=True, align_corners=False)
    tile = torch.randn(1, 1, 32, 32, generator=g)
    pattern = tile.repeat(1, 1, -(-h // 32), -(-w // 32))[..., :h, :w]
    pattern = 0.01 * pattern / pattern.std()
    corner = torch.zeros_like(pattern)
    corner[..., :CORNER, :CORNER] = pattern[..., :CORNER, :CORNER]
    return x_lr.clamp(0, 1), scene, (scene + pattern).clamp(0, 1), (scene + corner).clamp(0, 1)


def seconds_per_report(x_sr: torch.Tensor, x_lr: torch.Tensor, repeats: int,
                       threshold: float) -> list[tuple[float, float]]:
    """(wall, process CPU) seconds of each of `repeats` quality_report calls, after one warm-up call.
    CPU seconds are less sensitive than wall seconds to other processes on a shared machine."""
    sync = torch.cuda.synchronize if x_sr.is_cuda else (lambda: None)
    quality_report(x_sr, x_lr, 32, threshold)
    out = []
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        quality_report(x_sr, x_lr, 32, threshold)
        sync()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def run(device: str, size: tuple[int, int], repeats: int, threshold: float) -> dict:
    x_lr, clean, patterned, corner = (t.to(device) for t in test_images(size))
    times = seconds_per_report(clean, x_lr, repeats, threshold)
    wall, cpu = [t for t, _ in times], [c for _, c in times]
    r_clean, r_pattern, r_corner = quality_report(torch.cat([clean, patterned, corner]), torch.cat([x_lr] * 3), 32,
                                                  threshold)
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(),
        "seconds_median": round(statistics.median(wall), 4),
        "seconds_min": round(min(wall), 4),
        "seconds_all": [round(t, 4) for t in wall],
        "process_cpu_seconds_median": round(statistics.median(cpu), 4),
        "period32_check": {"clean_ap_excess": round(r_clean.ap_excess, 4), "clean_flagged": r_clean.flagged,
                           "pattern_ap_excess": round(r_pattern.ap_excess, 4), "pattern_flagged": r_pattern.flagged,
                           "pattern_dominant_period_px": r_pattern.dominant_period_px,
                           "corner_ap_excess": round(r_corner.ap_excess, 4), "corner_flagged": r_corner.flagged,
                           "corner_dominant_period_px": r_corner.dominant_period_px,
                           "corner_tile_map": r_corner.ap_tile_map},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=(4096, 4096), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    threshold = float(load_config().report.threshold)
    size = tuple(args.size)
    results = {"size": list(size), "crop": DEFAULT_CROP, "threshold": threshold, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu_cores": os.cpu_count(), "machine": platform.machine(),
               "load_average_1m_before": round(os.getloadavg()[0], 2),  # the CPU is shared: read timings with it
               "cpu": run("cpu", size, args.repeats, threshold)}
    if torch.cuda.is_available():
        results["cuda"] = run("cuda", size, args.repeats, threshold)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
