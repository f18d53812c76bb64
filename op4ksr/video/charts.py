"""The pictures of a video's report: per-shot curves, and a temporal profile (one row of pixels per frame).

The temporal profile stacks the middle row of every output frame top to bottom: steady footage
draws smooth streaks (slanted by a pan), flicker draws horizontal bands, a cut a hard edge. It is
the cheapest picture of temporal stability there is, and is kept as one uint8 row per frame,
at most PROFILE_WIDTH wide, so a 10,000-frame reel costs ~30 MB.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PROFILE_WIDTH = 1024


def profile_row(output: torch.Tensor) -> np.ndarray:
    """(w', 3) uint8: the middle row of a (3, H, W) frame, area-resized to at most PROFILE_WIDTH."""
    row = output[:, output.shape[1] // 2].float().clamp(0, 1)[None]  # (1, 3, W)
    if row.shape[-1] > PROFILE_WIDTH:
        row = F.adaptive_avg_pool1d(row, PROFILE_WIDTH)
    return (row[0].T.numpy() * 255 + 0.5).astype(np.uint8)


def profile_png(rows: list[np.ndarray]) -> bytes:
    """The temporal profile as PNG bytes: one row per frame, top to bottom (a chunk's strip on a fleet)."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.stack(rows)).save(out, format="PNG")
    return out.getvalue()


def save_profile(rows: list[np.ndarray], path: Path) -> None:
    """The temporal profile PNG: one row per frame, top to bottom."""
    from PIL import Image

    Image.fromarray(np.stack(rows)).save(path)


def plot_shots(report: dict, path: Path) -> None:
    """Luma flicker (output and bicubic) and warping error (output and bicubic) over the frames, one colour per
    shot, cuts dashed, frames filled from bicubic marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (flicker, warping) = plt.subplots(2, 1, figsize=(8, 5), dpi=110, sharex=True)
    for shot in report["shots"]:
        frames = np.arange(shot["start"], shot["end"])
        line, = flicker.plot(frames, shot["flicker_curve"], lw=1.2, label=f"shot {shot['shot']}")
        flicker.plot(frames, shot["bicubic_flicker_curve"], lw=0.8, ls=":", color=line.get_color())
        if shot["warping_error"]:
            warping.plot(frames[1:], shot["warping_error"], lw=1.2, color=line.get_color())
            warping.plot(frames[1:], shot["bicubic_warping_error"], lw=0.8, ls=":", color=line.get_color())
        for failed in shot["failed_frames"]:
            flicker.axvline(failed["frame"], color="red", lw=0.8)
    for cut in report["cuts"]:
        for ax in (flicker, warping):
            ax.axvline(cut - 0.5, color="grey", ls="--", lw=0.8)
    threshold = report["settings"]["flicker_threshold"]
    flicker.axhspan(-threshold, threshold, color="grey", alpha=0.1)
    flicker.set_ylabel("luma flicker")
    warping.set_ylabel("warping error")
    warping.set_xlabel("frame (solid: output, dotted: bicubic; dashed: cuts; red: filled from bicubic)")
    if len(report["shots"]) <= 12:
        flicker.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
