"""The contradiction map drawn over the output, at a size a page shows whole: a PNG for reports/ and pages."""
from __future__ import annotations

import io

import torch
import torch.nn.functional as F
from PIL import Image

from op4ksr.imageops import bicubic_resize
from op4ksr.quality.contradiction import CELL_THRESHOLD, Contradiction

VIEW_PX = 1024  # the heatmap's longer side at most
_RED, _YELLOW = torch.tensor([1.0, 0.1, 0.1]), torch.tensor([1.0, 0.85, 0.1])


def heatmap_png(x_sr: torch.Tensor, result: Contradiction, cell_threshold: float = CELL_THRESHOLD,
                view_px: int = VIEW_PX) -> bytes:
    """PNG bytes: the output x_sr (3, H, W) in [0, 1], greyed and shrunk to at most view_px a side, with each
    cell tinted yellow from half the threshold up and red above it (opacity grows with the score)."""
    if result.scores is None:
        raise ValueError(f"an unscored result has no map to draw ({result.reason})")
    h, w = x_sr.shape[-2:]
    scale = min(1.0, view_px / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    base = bicubic_resize(x_sr[None].float().cpu(), size)[0].clamp(0, 1)  # (3, h', w')
    grey = base.mean(0, keepdim=True).expand(3, -1, -1) * 0.6 + 0.2  # greyed so the tint reads
    ratio = (result.scores.float() / cell_threshold)[None, None]  # (1, 1, rows, cols)
    ratio = F.interpolate(ratio, size=size, mode="nearest")[0, 0]  # (h', w') cells as blocks
    colour = torch.where(ratio[None] > 1, _RED[:, None, None], _YELLOW[:, None, None])
    alpha = ((ratio - 0.5) * 1.2).clamp(0, 0.75)[None]
    picture = grey * (1 - alpha) + colour * alpha
    pixels = (picture.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", optimize=True)
    return out.getvalue()
