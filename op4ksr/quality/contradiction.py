"""Where an output contradicts its input: a per-cell map, kept apart from detail added above the input's resolution.

Definitions and calibration: docs/QUALITY.md ("Where an output changed the picture"). On the
luminance of output and input (colour casts are `colour_shift`'s), per cell of about `cell_px`
output px (the token period), on the output's device:
- residual d = down(out) - in, down the antialiased bicubic of the LR-consistency measure;
- tolerance = what a faithful upscale cannot reproduce there either: the bicubic round trip's own
  residual down(up(in)) - in (largest over the cell and its 8 neighbours, so an edge moved by a
  sub-pixel is not a contradiction), the input's noise level (so a denoised grain or JPEG noise
  is not one), and 8-bit quantisation;
- score = RMS(d over the cell) / tolerance; a cell is contradicted above CELL_THRESHOLD, a level
  that bicubic (score <= 1 by construction) and bicubic + back-projection never reach.
added_detail = energy of the output above the input's Nyquist band (out - up(down(out))) over the
same energy of the bicubic upscale: 1 is bicubic's, more is detail added (a matter of policy).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from op4ksr.imageops import bicubic_resize

CELL_THRESHOLD = 2.0  # contradicted above this many tolerances (docs/QUALITY.md: calibration)
QUANTISATION = 2 / 255  # the tolerance's floor: two 8-bit steps
# Immerkaer's noise estimator (1996): this kernel cancels planes and ramps; its response to noise has std 6 sigma
_NOISE_KERNEL = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
_MEDIAN_SCALE = 1 / (0.6745 * 6)  # the response's std is 6 sigma; its median |.| is 0.6745 std
_LUMA = torch.tensor([0.299, 0.587, 0.114])  # imageops.luminance's weights


@dataclass(frozen=True)
class Contradiction:
    """One output's contradiction map (docs/QUALITY.md); fields None with `reason` when it cannot be scored."""

    cell_px: int  # nominal output px per cell side (cells tile the output exactly; edges may be a pixel off)
    contradicted_fraction: float | None  # share of cells scoring above CELL_THRESHOLD
    worst_cell: dict | None  # {"top", "left", "height", "width"} in output px, "score" in tolerances
    added_detail: float | None  # output's energy above the input's Nyquist band / bicubic upscale's
    scores: torch.Tensor | None = None  # (rows, cols) float32 on the CPU, score per cell
    reason: str | None = None  # why the fields are None

    def as_dict(self) -> dict:
        """The manifest's fields (the map itself goes to the heatmap, not the manifest)."""
        return {"contradicted_fraction": self.contradicted_fraction, "worst_cell": self.worst_cell,
                "added_detail": self.added_detail, "contradiction_reason": self.reason}

    def cell_box(self, row: int, col: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(top, left, height, width) in output px of cell (row, col) of an output of size (H, W)."""
        rows, cols = self.scores.shape
        top, bottom = row * size[0] // rows, (row + 1) * size[0] // rows
        left, right = col * size[1] // cols, (col + 1) * size[1] // cols
        return top, left, bottom - top, right - left


def unscored(cell_px: int, reason: str) -> Contradiction:
    """A Contradiction whose fields are None, saying why."""
    return Contradiction(cell_px, None, None, None, None, reason)


def noise_sigma(y: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """(B, rows, cols) noise standard deviation of each luminance image y (B, 1, h, w) per cell (`cells` =
    rows, cols): Immerkaer's estimate from the median of the cell's responses (an edge through a cell is a
    minority of its pixels), and at least the median over the image's cells (its grain). The local figure
    keeps a master's JPEG ringing, which sits beside its edges, from reading as a contradiction where a
    model removed it."""
    kernel = _NOISE_KERNEL.to(y.device, y.dtype)[None, None]
    response = F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), kernel).abs()  # (B, 1, h, w)
    k = max(1, min(y.shape[-2] // cells[0], y.shape[-1] // cells[1]))  # px per cell side, rounded down
    grid = (cells[0] * k, cells[1] * k)
    if tuple(response.shape[-2:]) != grid:  # cells of exactly k x k px (resampled; this is an estimate)
        response = F.adaptive_avg_pool2d(response, grid)
    per_cell = F.unfold(response, k, stride=k).median(dim=1).values.view(-1, *cells) * _MEDIAN_SCALE
    grain = per_cell.flatten(1).median(dim=1).values[:, None, None]  # (B, 1, 1)
    return torch.maximum(per_cell, grain)


def _cell_rms(x: torch.Tensor, cells: tuple[int, int]) -> torch.Tensor:
    """(B, rows, cols) RMS of x (B, 1, h, w) over each of `cells` near-equal cells."""
    return F.adaptive_avg_pool2d(x.square(), cells)[:, 0].sqrt()


def _luma(x: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) float32 Rec. 601 luma of x (B, 3 or 1, H, W): imageops.luminance as one 1x1 convolution
    (a third of its CPU time at 4096 px)."""
    if x.shape[1] == 1:
        return x.float()
    return F.conv2d(x.float(), _LUMA.to(x.device).view(1, 3, 1, 1))


def _energy(x: torch.Tensor) -> torch.Tensor:
    """(B,) mean square of x (B, 1, H, W)."""
    return x.square().flatten(1).mean(1)


def cell_grid(size: tuple[int, int], cell_px: int) -> tuple[int, int]:
    """(rows, cols) of cells of about cell_px output px covering an output of `size` (H, W)."""
    return max(1, round(size[0] / cell_px)), max(1, round(size[1] / cell_px))


@torch.no_grad()
def contradiction_maps(x_sr: torch.Tensor, x_lr: torch.Tensor, cell_px: int = 32,
                       cell_threshold: float = CELL_THRESHOLD) -> list[Contradiction]:
    """One Contradiction per image of x_sr (B, C, H, W) against its input x_lr (B, C, h, w), C 1 or 3, both
    in [0, 1], computed on x_sr's device. An output below one cell, or an input whose cells would be
    under 2 px, gets None fields with the reason."""
    size, lr_size = tuple(x_sr.shape[-2:]), tuple(x_lr.shape[-2:])
    if min(size) < cell_px:
        return [unscored(cell_px, f"output {size[1]}x{size[0]} is smaller than one {cell_px} px cell")] * len(x_sr)
    cells = cell_grid(size, cell_px)
    if lr_size[0] < 2 * cells[0] or lr_size[1] < 2 * cells[1]:
        return [unscored(cell_px, f"input {lr_size[1]}x{lr_size[0]} has under 2 px per cell")] * len(x_sr)
    y_sr, y_lr = _luma(x_sr), _luma(x_lr.to(x_sr.device))  # (B, 1, H, W), (B, 1, h, w)
    down_sr = bicubic_resize(y_sr, lr_size)
    residual = _cell_rms(down_sr - y_lr, cells)  # (B, rows, cols)
    round_trip = bicubic_resize(bicubic_resize(y_lr, size), lr_size) - y_lr  # what bicubic cannot reproduce
    faithful = F.max_pool2d(_cell_rms(round_trip, cells)[:, None], 3, stride=1, padding=1)[:, 0]  # and neighbours
    noise = noise_sigma(y_lr, cells)  # (B, rows, cols)
    tolerance = (faithful.square() + noise.square() + QUANTISATION**2).sqrt()
    scores = (residual / tolerance).cpu()  # (B, rows, cols)
    # above the input's Nyquist band: y - up(down(y)); for the bicubic upscale (linear) that is -up(round_trip)
    added_energy = _energy(y_sr - bicubic_resize(down_sr, size))
    bicubic_energy = _energy(bicubic_resize(round_trip, size)).clamp_min(1e-12)
    added = (added_energy / bicubic_energy).tolist()
    return [_summary(s, a, cell_px, size, cell_threshold) for s, a in zip(scores, added)]


def _summary(scores: torch.Tensor, added: float, cell_px: int, size: tuple[int, int],
             cell_threshold: float) -> Contradiction:
    rows, cols = scores.shape
    worst = int(scores.argmax())
    partial = Contradiction(cell_px, float((scores > cell_threshold).float().mean()), None, float(added), scores)
    top, left, height, width = partial.cell_box(worst // cols, worst % cols, size)
    worst_cell = {"row": worst // cols, "col": worst % cols, "top": top, "left": left, "height": height,
                  "width": width, "score": round(float(scores.flatten()[worst]), 3)}
    return Contradiction(cell_px, partial.contradicted_fraction, worst_cell, round(float(added), 4), scores)


def region_score(result: Contradiction, box: tuple[int, int, int, int], size: tuple[int, int]) -> float | None:
    """The largest cell score among the cells that overlap `box` (top, left, height, width in output px of
    an output of `size`); None for an unscored result."""
    if result.scores is None:
        return None
    rows, cols = result.scores.shape
    top, left, height, width = box
    r0, r1 = top * rows // size[0], min(rows, -(-(top + height) * rows // size[0]))
    c0, c1 = left * cols // size[1], min(cols, -(-(left + width) * cols // size[1]))
    return round(float(result.scores[r0:max(r1, r0 + 1), c0:max(c1, c0 + 1)].max()), 3)
