"""Temporal measures on footage of known motion: the flow finds it, injected flicker is flagged and
bicubic is not, and an output that adds per-frame noise has a warping error above bicubic's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.video.temporal import FlowPair, TemporalMeter, flicker_curve
from tests.synthetic_video import moving_texture, with_flicker

pytest.importorskip("cv2")
SCALE = 2


def _bicubic(frames):
    return [bicubic_resize(f[None], (f.shape[1] * SCALE, f.shape[2] * SCALE))[0].clamp(0, 1) for f in frames]


def _hwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(1, 2, 0).numpy())


def _measure(outputs, bicubic, threshold=0.02):
    meter = TemporalMeter()
    for out, bic in zip(outputs, bicubic):
        meter.add(out, bic)
    return meter.measures.summary(threshold)


def test_flow_on_bicubic_frames_finds_the_known_motion():
    a, b = _bicubic(moving_texture(2, size=(48, 64), step=(1, 2), seed=4))
    pair = FlowPair(_hwc(a), _hwc(b))
    assert pair.valid.mean() > 0.8
    flow = pair.backward[pair.valid]  # where each pixel of b was in a: the window moved by (1, 2) * SCALE
    assert np.median(flow[:, 0]) == pytest.approx(2 * SCALE, abs=0.25)
    assert np.median(flow[:, 1]) == pytest.approx(1 * SCALE, abs=0.25)
    assert pair.warping_error(_hwc(a), _hwc(b)) < 0.01


def test_injected_flicker_is_flagged_and_bicubic_is_not():
    bicubic = _bicubic(moving_texture(8, step=(0, 1), seed=5))
    report = _measure(with_flicker(bicubic, {4: 1.08}), bicubic)
    assert report["flicker_flagged"] == [4]
    assert report["bicubic_flicker_flagged"] == []
    assert max(map(abs, report["bicubic_flicker_curve"])) < 0.005
    assert report["max_added_flicker"] > 0.02


def test_per_frame_noise_raises_the_warping_error_above_bicubic():
    bicubic = _bicubic(moving_texture(5, step=(1, 1), seed=6))
    rng = torch.Generator().manual_seed(0)
    noisy = [(b + 0.03 * torch.randn(b.shape, generator=rng)).clamp(0, 1) for b in bicubic]
    same = _measure(bicubic, bicubic)
    assert same["warping_error_vs_bicubic"] == pytest.approx(1.0)
    report = _measure(noisy, bicubic)
    assert len(report["warping_error"]) == 4
    assert report["warping_error_vs_bicubic"] > 3


def test_flicker_curve_ignores_a_steady_fade():
    assert flicker_curve([0.5, 0.51, 0.52, 0.53]) == pytest.approx([-0.01, 0.0, 0.0, 0.01])
    assert flicker_curve([0.5]) == [0.0]
