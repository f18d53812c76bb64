"""Temporal measures of one shot's outputs, each set beside the same measure on the bicubic upscale.

- Luma flicker: a frame's mean BT.709 luma minus the mean of its two neighbours' (one neighbour at
  a shot's ends), so a steady fade or a pan counts ~0 and a one-frame brightness jump counts its
  size. A frame is flagged when the output's value differs from bicubic's by more than the
  threshold (video.flicker_threshold): the flicker the upscaler added, not the film's own.
- Warping error: the mean absolute difference (RGB, in [0, 1]) between output t and output t-1
  warped onto t by the optical flow of the bicubic-upscaled inputs (OpenCV's DIS, weight-free),
  over the pixels that flow finds in both frames: forward-backward consistent (Sundaram et al.
  2010) and not moved out of the frame. The same on the bicubic frames gives the figure the
  upscaler is judged against: ratio = output error / bicubic error (1 = as steady as bicubic).
The flow is computed once per frame pair, on the bicubic frames, and serves both measures.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from op4ksr.extras import require

LUMA = (0.2126, 0.7152, 0.0722)


def mean_luma(rgb: torch.Tensor) -> float:
    """Mean BT.709 luma of a (3, H, W) frame in [0, 1]."""
    return float(sum(w * rgb[c].double().mean() for c, w in enumerate(LUMA)))


def flicker_curve(lumas: list[float]) -> list[float]:
    """Each frame's mean luma minus its neighbours' mean (one neighbour at the ends; 0 for one frame)."""
    n = len(lumas)
    if n < 2:
        return [0.0] * n
    curve = []
    for t, value in enumerate(lumas):
        neighbours = [lumas[s] for s in (t - 1, t + 1) if 0 <= s < n]
        curve.append(value - sum(neighbours) / len(neighbours))
    return curve


def _gray8(rgb: np.ndarray) -> np.ndarray:
    luma = rgb[..., 0] * LUMA[0] + rgb[..., 1] * LUMA[1] + rgb[..., 2] * LUMA[2]
    return np.clip(luma * 255.0 + 0.5, 0, 255).astype(np.uint8)


class FlowPair:
    """The flow between two consecutive frames (from their bicubic upscales), and where it can be trusted."""

    def __init__(self, previous: np.ndarray, current: np.ndarray):
        """`previous`, `current`: (H, W, 3) float32 in [0, 1]."""
        cv2 = require("cv2", "video", "the warping error's optical flow")
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        prev8, cur8 = _gray8(previous), _gray8(current)
        backward = dis.calc(cur8, prev8, None)  # (H, W, 2): where each pixel of `current` was in `previous`
        forward = dis.calc(prev8, cur8, None)
        h, w = cur8.shape
        xs, ys = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        self.map_x, self.map_y = xs + backward[..., 0], ys + backward[..., 1]
        forward_there = cv2.remap(forward, self.map_x, self.map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        round_trip = ((forward_there + backward) ** 2).sum(-1)
        bound = 0.01 * ((forward_there ** 2).sum(-1) + (backward ** 2).sum(-1)) + 0.5
        inside = (self.map_x >= 0) & (self.map_x <= w - 1) & (self.map_y >= 0) & (self.map_y <= h - 1)
        self.valid = (round_trip < bound) & inside  # (H, W) bool: not occluded, not out of frame
        self.backward = backward
        self._cv2 = cv2

    def warp(self, previous: np.ndarray) -> np.ndarray:
        """`previous` (H, W, C) moved onto the current frame's pixels."""
        return self._cv2.remap(previous, self.map_x, self.map_y, self._cv2.INTER_LINEAR,
                               borderMode=self._cv2.BORDER_REPLICATE)

    def warping_error(self, previous: np.ndarray, current: np.ndarray) -> float:
        """Mean |current - warp(previous)| over the valid pixels (NaN if none is valid)."""
        if not self.valid.any():
            return float("nan")
        return float(np.abs(current - self.warp(previous))[self.valid].mean())


def _hwc(rgb: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(rgb.float().clamp(0, 1).permute(1, 2, 0).numpy())


@dataclass
class ShotMeasures:
    """The temporal measures of one shot, filled a frame at a time by TemporalMeter."""

    output_luma: list[float] = field(default_factory=list)
    bicubic_luma: list[float] = field(default_factory=list)
    output_warping_error: list[float] = field(default_factory=list)  # one per frame after the first
    bicubic_warping_error: list[float] = field(default_factory=list)
    valid_share: list[float] = field(default_factory=list)  # share of pixels the flow trusts, per pair

    def summary(self, flicker_threshold: float) -> dict:
        """The shot's report: curves, flagged frames (0-based within the shot), mean errors and their ratio."""
        out_curve, bic_curve = flicker_curve(self.output_luma), flicker_curve(self.bicubic_luma)
        added = [o - b for o, b in zip(out_curve, bic_curve)]
        out_err = _nanmean(self.output_warping_error)
        bic_err = _nanmean(self.bicubic_warping_error)
        return {
            "flicker_curve": out_curve, "bicubic_flicker_curve": bic_curve,
            "flicker_flagged": [t for t, a in enumerate(added) if abs(a) > flicker_threshold],
            "bicubic_flicker_flagged": [t for t, b in enumerate(bic_curve) if abs(b) > flicker_threshold],
            "max_added_flicker": max((abs(a) for a in added), default=0.0),
            "warping_error": self.output_warping_error, "bicubic_warping_error": self.bicubic_warping_error,
            "mean_warping_error": out_err, "mean_bicubic_warping_error": bic_err,
            "warping_error_vs_bicubic": (out_err / bic_err) if bic_err and bic_err > 0 else None,
            "flow_valid_share": self.valid_share,
        }


def _nanmean(values: list[float]) -> float | None:
    finite = [v for v in values if v == v]
    return float(np.mean(finite)) if finite else None


class TemporalMeter:
    """Measures one shot as its frames arrive in order; keeps only the previous frame pair."""

    def __init__(self, flow: bool = True):
        self.measures = ShotMeasures()
        self.flow = flow
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def add(self, output: torch.Tensor, bicubic: torch.Tensor, pair: FlowPair | None = None) -> None:
        """The next frame's output and bicubic upscale, (3, H, W) in [0, 1], one size; `pair`: the flow
        from the previous bicubic frame to this one if already computed (by op4ksr.video.fusion)."""
        self.measures.output_luma.append(mean_luma(output))
        self.measures.bicubic_luma.append(mean_luma(bicubic))
        if not self.flow:
            return
        out, bic = _hwc(output), _hwc(bicubic)
        if self._previous is not None:
            prev_out, prev_bic = self._previous
            pair = pair or FlowPair(prev_bic, bic)
            self.measures.output_warping_error.append(pair.warping_error(prev_out, out))
            self.measures.bicubic_warping_error.append(pair.warping_error(prev_bic, bic))
            self.measures.valid_share.append(float(pair.valid.mean()))
        self._previous = (out, bic)
