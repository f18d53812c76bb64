"""Small test images for the evidence checks: held-out photos, a rendered caption, and defects planted in outputs.

A plant is an output (1, 3, H, W) that a faithful upscale of `lr` would be but for one local change,
with the box (top, left, height, width) in output px where it was made.
"""
from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from op4ksr.fidelity import back_project
from op4ksr.imageops import bicubic_resize

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian's fonts-dejavu-core
SCALE = 4


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1] from uint8 (H, W) or (H, W, 3+) pixels."""
    a = np.asarray(pixels, dtype=np.float32) / 255
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return torch.from_numpy(np.ascontiguousarray(a[..., :3])).permute(2, 0, 1)[None].contiguous()


def photo(name: str, box: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """(1, 3, H, W) scikit-image's photo `name`, cropped to box (top, left, height, width), sides multiples of 4."""
    import skimage.data

    x = to_tensor(getattr(skimage.data, name)())
    if box is not None:
        top, left, height, width = box
        x = x[..., top:top + height, left:left + width]
    h, w = x.shape[-2:]
    return x[..., :h - h % SCALE, :w - w % SCALE].contiguous()


def caption(lines: list[str], size: tuple[int, int] = (160, 640), points: int = 36) -> torch.Tensor:
    """(1, 3, H, W) black DejaVu Sans text on white, one string per line."""
    image = Image.new("RGB", (size[1], size[0]), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.truetype(FONT, points)
    for i, line in enumerate(lines):
        draw.text((16, 12 + i * int(points * 1.4)), line, fill="black", font=font)
    return to_tensor(np.asarray(image))


def downscale(hr: torch.Tensor) -> torch.Tensor:
    """The x4 input of hr (1, 3, H, W): the antialiased bicubic of the LR-consistency measure."""
    return bicubic_resize(hr, (hr.shape[-2] // SCALE, hr.shape[-1] // SCALE))


def bicubic(lr: torch.Tensor) -> torch.Tensor:
    return bicubic_resize(lr, (lr.shape[-2] * SCALE, lr.shape[-1] * SCALE)).clamp(0, 1)


def back_projected(lr: torch.Tensor) -> torch.Tensor:
    return back_project(bicubic(lr), lr, 10).clamp(0, 1)


def with_grain(lr: torch.Tensor, sigma: float = 0.03, seed: int = 0) -> torch.Tensor:
    """lr with Gaussian grain of std sigma, in [0, 1]."""
    noise = torch.randn(lr.shape, generator=torch.Generator().manual_seed(seed))
    return (lr + sigma * noise).clamp(0, 1)


def as_jpeg(lr: torch.Tensor, quality: int = 30) -> torch.Tensor:
    """lr through a JPEG round trip at `quality` (its blocks and ringing are the master's own)."""
    pixels = (lr[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    data = io.BytesIO()
    Image.fromarray(pixels).save(data, format="JPEG", quality=quality)
    return to_tensor(np.asarray(Image.open(io.BytesIO(data.getvalue())).convert("RGB")))


def patch_replaced(out: torch.Tensor, box: tuple[int, int, int, int], source: tuple[int, int]) -> torch.Tensor:
    """out with box (top, left, height, width) replaced by the same-sized block at source (top, left)."""
    top, left, height, width = box
    planted = out.clone()
    planted[..., top:top + height, left:left + width] = out[..., source[0]:source[0] + height, source[1]:source[1] + width]
    return planted


def line_removed(out: torch.Tensor, rows: tuple[int, int], cols: tuple[int, int], from_rows: int) -> torch.Tensor:
    """out with rows [r0, r1) over cols [c0, c1) painted over by the rows `from_rows` px above (a whisker gone)."""
    planted = out.clone()
    (r0, r1), (c0, c1) = rows, cols
    planted[..., r0:r1, c0:c1] = out[..., r0 - from_rows:r1 - from_rows, c0:c1]
    return planted


def smoothed(out: torch.Tensor, box: tuple[int, int, int, int], passes: int = 4) -> torch.Tensor:
    """out with box (top, left, height, width) blurred by `passes` of a 9 px box filter (a face airbrushed)."""
    top, left, height, width = box
    region = out[..., top:top + height, left:left + width]
    for _ in range(passes):
        region = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(region, (4, 4, 4, 4), mode="replicate"), 9, 1)
    planted = out.clone()
    planted[..., top:top + height, left:left + width] = region
    return planted


def within_one_cell(worst: dict, box: tuple[int, int, int, int], cell_px: int = 32) -> bool:
    """Whether the worst cell (output px) lies within one cell of the planted box (top, left, height, width)."""
    top, left, height, width = box
    centre = (worst["top"] + worst["height"] / 2, worst["left"] + worst["width"] / 2)
    return (top - cell_px <= centre[0] <= top + height + cell_px) and (left - cell_px <= centre[1] <= left + width + cell_px)
