"""File side of `op4ksr calibrate`: sample images in, a sweep chart out."""
from __future__ import annotations

from pathlib import Path

import torch

from op4ksr.errors import UserError
from op4ksr.images.codec import decode_image
from op4ksr.images.folders import image_files


def load_sample_images(folder: Path, extensions, limit: int) -> list[torch.Tensor]:
    """Up to `limit` images under `folder` as (3, h, w) tensors in [0, 1]; unreadable files are skipped."""
    images = []
    for path in image_files(folder, extensions):
        try:
            images.append(decode_image(path.read_bytes()).rgb)
        except ValueError:
            continue
        if len(images) >= limit:
            break
    if not images:
        raise UserError(f"no readable images in {folder} (extensions: {', '.join(sorted(e.lower() for e in extensions))})")
    return images


def plot_sweep(results, choice, path: Path) -> None:
    """ap_excess (and lr PSNR on a second axis) against RFR scale, log-x, the choice marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [r.rfr_scale for r in results]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(scales, [r.mean_ap_excess for r in results], "o-", label="mean ap_excess")
    ax.axvline(choice.rfr_scale, color="tab:green", linestyle="--", label=f"chosen {choice.rfr_scale:g}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("rfr.scale")
    ax.set_ylabel("mean ap_excess")
    twin = ax.twinx()
    twin.plot(scales, [r.mean_lr_consistency_psnr for r in results], "s:", color="tab:orange", label="lr PSNR")
    twin.set_ylabel("mean lr_consistency_psnr (dB)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
