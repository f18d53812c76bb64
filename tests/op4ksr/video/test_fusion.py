"""video.temporal=flow on outputs that flicker: the measure shows what the fusion changes."""
from __future__ import annotations

import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.video.remaster import ShotRunner, VideoSettings
from op4ksr.video.shots import Shot
from tests.synthetic_video import moving_texture

pytest.importorskip("cv2")


def _flickering_upscaler(seed: int = 0):
    """Bicubic plus fresh detail noise each frame and a 6% brightness jump on the 5th frame: a per-frame
    upscaler that flickers."""
    rng, calls = torch.Generator().manual_seed(seed), []

    def upscale(rgb, size):
        calls.append(1)
        out = bicubic_resize(rgb[None], size)[0] + 0.03 * torch.randn(3, *size, generator=rng)
        return out * (1.06 if len(calls) == 5 else 1.0)
    return upscale


def _run(temporal: str) -> dict:
    frames = moving_texture(8, size=(32, 48), step=(0, 1), seed=7)
    settings = VideoSettings(temporal=temporal, flicker_threshold=0.02)
    runner = ShotRunner(_flickering_upscaler(), (64, 96), [Shot(0, 8)], settings)
    for t, frame in enumerate(frames):
        runner.run(t, frame)
    (shot,) = runner.finish()
    return shot


def test_flow_fusion_lowers_warping_error_and_flicker_against_per_frame_outputs():
    per_frame, fused = _run("none"), _run("flow")
    assert per_frame["flicker_flagged"] == [4]
    assert per_frame["warping_error_vs_bicubic"] > 3
    assert fused["warping_error_vs_bicubic"] < 0.75 * per_frame["warping_error_vs_bicubic"]
    assert fused["max_added_flicker"] < 0.7 * per_frame["max_added_flicker"]
    # the bicubic reference and its flow are the same in both runs: only the outputs changed
    assert fused["mean_bicubic_warping_error"] == pytest.approx(per_frame["mean_bicubic_warping_error"])


def test_fusion_starts_again_at_a_cut():
    frames = moving_texture(3, seed=1) + moving_texture(3, seed=2)
    settings = VideoSettings(temporal="flow")
    runner = ShotRunner(lambda rgb, size: bicubic_resize(rgb[None], size)[0], (96, 128),
                        [Shot(0, 3), Shot(3, 6)], settings)
    outputs = [runner.run(t, f) for t, f in enumerate(frames)]
    first_of_second_shot = bicubic_resize(frames[3][None], (96, 128))[0].clamp(0, 1)
    torch.testing.assert_close(outputs[3], first_of_second_shot, atol=1e-6, rtol=0)  # nothing from shot 1


def test_chunks_of_a_long_shot_are_fused_from_their_own_start_and_cross_faded():
    from op4ksr.video.fusion import FlowFusion

    frames = moving_texture(6, size=(32, 48), step=(0, 1), seed=8)
    size = (64, 96)
    settings = VideoSettings(temporal="flow", chunk_frames=4, chunk_overlap=2)  # chunks [0, 4) [2, 6)
    upscale = _flickering_upscaler(seed=1)
    outputs, raws = [], []

    def recording(rgb, size):
        raws.append(upscale(rgb, size).clamp(0, 1))
        return raws[-1]

    runner = ShotRunner(recording, size, [Shot(0, 6)], settings)
    outputs = [runner.run(t, f) for t, f in enumerate(frames)]
    (shot,) = runner.finish()
    assert shot["chunks"] == [[0, 4], [2, 6]]
    first, second = FlowFusion(), FlowFusion()  # what two actors would compute, one chunk each
    bicubic = [bicubic_resize(f[None], size)[0].clamp(0, 1) for f in frames]
    a = [first.apply(raws[t], bicubic[t]) for t in range(4)]
    b = {t: second.apply(raws[t], bicubic[t]) for t in range(2, 6)}
    expected = [a[0], a[1], a[2] * 2 / 3 + b[2] / 3, a[3] / 3 + b[3] * 2 / 3, b[4], b[5]]
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_every_temporal_mode_runs_and_the_config_offers_exactly_those():
    from typing import get_args

    from jobs.config_rules import RULES
    from op4ksr.video.settings import TemporalMode

    assert RULES["video.temporal"].choices == get_args(TemporalMode) == ("none", "flow")
    frames = moving_texture(2, size=(32, 48), seed=9)
    for mode in get_args(TemporalMode):
        runner = ShotRunner(_flickering_upscaler(), (64, 96), [Shot(0, 2)], VideoSettings(temporal=mode))
        outputs = [runner.run(t, f) for t, f in enumerate(frames)]
        assert (runner._fusion is not None) == (mode == "flow") and outputs[1].shape == (3, 64, 96)
