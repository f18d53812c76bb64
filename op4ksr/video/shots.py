"""Shots: hard cuts found weight-free, and shots split into overlapping chunks that never cross a cut.

The cut score between two consecutive frames mixes two differences, each in [0, 1], measured on
a small luma thumbnail (CUT_THUMBNAIL_WIDTH wide, so the cost does not grow with the frame):
  - histogram: the earth mover's distance between the two 64-bin luma histograms, scaled so a
    shift of a quarter of the range counts 1. A fade or a flicker moves it a little; a new scene
    with other tones moves it a lot.
  - edges: the share of strong-edge pixels (the top EDGE_SHARE of Sobel magnitude, so the choice
    does not depend on brightness) of either frame with no strong edge of the other within
    EDGE_TOLERANCE thumbnail pixels, once the second frame is moved by the global shift that phase
    correlation finds (at most a quarter of the thumbnail), over the part both frames show. A pan
    or a tilt is undone by the shift and local motion of a pixel or two by the tolerance, so they
    keep it low; another picture takes it near 1.
score = min(1, histogram + edges), and frame t starts a new shot when score(t-1, t) >= the
threshold (video.cut_threshold, 0.4). A sum, not a mean, so that a cut between two scenes of the
same tones (histogram ~0) is found by its edges alone (~0.5 for two unrelated textures), while a
pan (edges < 0.15) or a one-frame flicker of 10% (histogram ~0.2) stays under it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

CUT_THUMBNAIL_WIDTH = 128
HISTOGRAM_BINS = 64
HISTOGRAM_FULL_SHIFT = 0.25
EDGE_SHARE = 0.05
EDGE_TOLERANCE = 1


@dataclass(frozen=True)
class Shot:
    start: int  # index of the first frame (0-based, in decode order of the sequence or video)
    end: int  # one past the last frame

    @property
    def length(self) -> int:
        return self.end - self.start


def luma_thumbnail(rgb: torch.Tensor) -> np.ndarray:
    """(h', CUT_THUMBNAIL_WIDTH) float32 BT.709 luma of a (3, h, w) frame in [0, 1] (area-averaged)."""
    _, h, w = rgb.shape
    width = min(CUT_THUMBNAIL_WIDTH, w)
    height = max(1, round(h * width / w))
    luma = (0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2])[None, None].float()
    return F.adaptive_avg_pool2d(luma, (height, width))[0, 0].numpy()


def cut_score(a: np.ndarray, b: np.ndarray) -> float:
    """The cut score (module docstring) of two luma thumbnails of one size, in [0, 1]."""
    return min(1.0, histogram_difference(a, b) + edge_difference(a, b))


def histogram_difference(a: np.ndarray, b: np.ndarray) -> float:
    bins = np.linspace(0.0, 1.0, HISTOGRAM_BINS + 1)
    cdf_a = np.cumsum(np.histogram(np.clip(a, 0, 1), bins)[0]) / a.size
    cdf_b = np.cumsum(np.histogram(np.clip(b, 0, 1), bins)[0]) / b.size
    emd = float(np.abs(cdf_a - cdf_b).sum()) / HISTOGRAM_BINS  # in units of the full luma range
    return min(1.0, emd / HISTOGRAM_FULL_SHIFT)


def edge_difference(a: np.ndarray, b: np.ndarray) -> float:
    dy, dx = global_shift(a, b)
    h, w = a.shape
    edges_a = _strong_edges(a)[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)]
    edges_b = _strong_edges(b)[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    near_a, near_b = _dilate(edges_a, EDGE_TOLERANCE), _dilate(edges_b, EDGE_TOLERANCE)
    lost = (edges_a & ~near_b).sum() + (edges_b & ~near_a).sum()
    total = edges_a.sum() + edges_b.sum()
    return float(lost / total) if total else 0.0


def global_shift(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(dy, dx) such that b[y, x] ~ a[y + dy, x + dx]: the phase-correlation peak, within a quarter of the size."""
    spectrum = np.fft.rfft2(a - a.mean()) * np.conj(np.fft.rfft2(b - b.mean()))
    correlation = np.fft.irfft2(spectrum / np.maximum(np.abs(spectrum), 1e-12), s=a.shape)
    h, w = a.shape
    ys, xs = np.fft.fftfreq(h, 1 / h).astype(int), np.fft.fftfreq(w, 1 / w).astype(int)
    allowed = (np.abs(ys)[:, None] <= h // 4) & (np.abs(xs)[None, :] <= w // 4)
    y, x = np.unravel_index(np.argmax(np.where(allowed, correlation, -np.inf)), a.shape)
    return int(ys[y]), int(xs[x])


def _strong_edges(luma: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(luma))[None, None]
    sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    kernels = torch.stack([sobel, sobel.T])[:, None]  # (2, 1, 3, 3)
    grad = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernels)[0]
    magnitude = grad.pow(2).sum(0).sqrt().numpy()
    if magnitude.max() <= 1e-6:  # a flat frame has no edges
        return np.zeros_like(magnitude, dtype=bool)
    return magnitude >= max(np.quantile(magnitude, 1 - EDGE_SHARE), 1e-6)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    x = torch.from_numpy(mask.astype(np.float32))[None, None]
    return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)[0, 0].numpy() > 0


def find_cuts(thumbnails: list[np.ndarray], threshold: float) -> tuple[list[int], list[float]]:
    """(frames that start a new shot, score of each frame against the one before; 0 for frame 0)."""
    scores = CutScores()
    for thumbnail in thumbnails:
        scores.add(thumbnail)
    return scores.cuts(threshold), scores.scores


class CutScores:
    """Cut scores of frames given one at a time; holds only the previous thumbnail, so a reel of any
    length costs one float a frame."""

    def __init__(self):
        self.scores: list[float] = []
        self._previous: np.ndarray | None = None

    def add(self, thumbnail: np.ndarray) -> None:
        self.scores.append(0.0 if self._previous is None else cut_score(self._previous, thumbnail))
        self._previous = thumbnail

    def cuts(self, threshold: float) -> list[int]:
        """The frames whose score reaches `threshold` (each starts a new shot)."""
        if not 0 < threshold <= 1:
            raise ValueError(f"cut threshold must be in (0, 1], got {threshold}")
        return [t for t, s in enumerate(self.scores) if t > 0 and s >= threshold]


def shots_from_cuts(cuts: list[int], frame_count: int) -> list[Shot]:
    """The shots of `frame_count` frames cut at `cuts` (each a frame that starts a shot)."""
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < frame_count) + [frame_count]
    return [Shot(a, b) for a, b in zip(bounds, bounds[1:])]


def chunk_shot(shot: Shot, chunk_frames: int, overlap: int) -> list[Shot]:
    """`shot` as chunks of at most `chunk_frames` frames, each overlapping the one before by `overlap`
    frames (for a temporal window to cross-fade over), all inside the shot: no chunk crosses a cut."""
    if chunk_frames < 1 or not 0 <= overlap < chunk_frames:
        raise ValueError(f"chunks need chunk_frames >= 1 and 0 <= overlap < chunk_frames, got {chunk_frames}, {overlap}")
    chunks, start = [], shot.start
    while True:
        end = min(start + chunk_frames, shot.end)
        chunks.append(Shot(start, end))
        if end == shot.end:
            return chunks
        start = end - overlap
