"""One chunk run frame by frame (the fleet's unit of work): per-frame seconds, the failed frame's error, read-back."""
from __future__ import annotations

import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.video.chunks import ChunkRunner
from op4ksr.video.settings import VideoSettings
from tests.synthetic_video import moving_texture

pytest.importorskip("cv2")
SIZE = (32, 48)


def noisy(rgb, size):
    """An upscaler whose output is not bicubic's, so a filled frame can be told from a kept one."""
    return (bicubic_resize(rgb[None], size)[0] + 0.05).clamp(0, 1)


def test_a_failed_frame_keeps_its_error_and_bicubic_and_the_chunk_goes_on():
    frames = moving_texture(4, size=(16, 24), seed=2)

    def fails_on_third(rgb, size):
        if torch.equal(rgb, frames[2]):
            raise RuntimeError("out of memory")
        return noisy(rgb, size)

    runner = ChunkRunner(fails_on_third, SIZE, 4, VideoSettings(measure_flow=False))
    results = [runner.run(f) for f in frames]
    assert [r.error for r in results] == [None, None, "RuntimeError: out of memory", None]
    assert torch.equal(results[2].output, bicubic_resize(frames[2][None], SIZE)[0].clamp(0, 1))
    assert torch.equal(results[3].output, noisy(frames[3], SIZE))
    assert all(r.seconds > 0 for r in results)
    assert runner.report()["failed_frames"] == [{"frame": 2, "error": "RuntimeError: out of memory",
                                                 "filled_from": "bicubic"}]


def test_a_frame_done_before_is_kept_as_it_is_and_costs_no_model_time():
    frames = moving_texture(3, size=(16, 24), seed=3)
    calls = []

    def counted(rgb, size):
        calls.append(1)
        return noisy(rgb, size)

    done = torch.full((3, *SIZE), 0.5)
    runner = ChunkRunner(counted, SIZE, 3, VideoSettings(measure_flow=False, temporal="flow"))
    first, kept, last = runner.run(frames[0]), runner.run(frames[1], done), runner.run(frames[2])
    assert len(calls) == 2 and kept.seconds == 0 and kept.error is None and torch.equal(kept.output, done)
    assert first.error is None and last.error is None
