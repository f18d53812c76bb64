"""One chunk of a shot upscaled in order, frame by frame: the unit of work a fleet's worker gets.

A chunk (op4ksr.video.shots.chunk_shot) lies inside one shot, so it is run as a shot of its own
through ShotRunner: failed frames are filled from bicubic, `video.temporal=flow` fuses from the
chunk's first frame, and the chunk's temporal measures start there. Each frame's result says
what a per-frame record needs: the output, the seconds inside the upscaler, and the error of a
frame that was filled. Nothing here knows where frames come from or go (no storage, no Ray).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from op4ksr.video.remaster import ShotRunner, Upscaler
from op4ksr.video.settings import VideoSettings
from op4ksr.video.shots import Shot


@dataclass
class FrameResult:
    output: torch.Tensor  # (3, H, W) in [0, 1]: the model's, fused with `flow`, or bicubic when `error`
    seconds: float  # wall seconds inside the upscaler (0 for a frame read back from an earlier run)
    error: str | None  # why the frame was filled from bicubic; None when the model's output is kept


class ChunkRunner:
    """Runs the `frames` frames of one chunk, in order; `run` once per frame."""

    def __init__(self, upscale: Upscaler, size: tuple[int, int], frames: int, settings: VideoSettings):
        self._upscale, self._error = upscale, None
        self._runner = ShotRunner(self._recording, size, [Shot(0, frames)], settings)
        self._next = 0

    def _recording(self, rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The upscaler, keeping the message of its exception (ShotRunner keeps only a count per shot)."""
        self._error = None
        try:
            return self._upscale(rgb, size)
        except Exception as err:
            self._error = f"{type(err).__name__}: {err}"
            raise

    def run(self, rgb: torch.Tensor, done: torch.Tensor | None = None) -> FrameResult:
        """The next frame's result; `done`: its output from an earlier run, kept (and fused from) as it is."""
        seconds, failures = self._runner.upscale_seconds, self._runner.failures
        output = self._runner.run(self._next, rgb, done)
        self._next += 1
        error = None
        if self._runner.failures > failures:
            error = self._error or "the upscaler returned an output of the wrong shape"
        return FrameResult(output, self._runner.upscale_seconds - seconds, error)

    @property
    def profile(self) -> list:
        """The middle row of each frame's output so far, (w', 3) uint8 (op4ksr.video.charts.profile_row)."""
        return self._runner.profile

    def report(self) -> dict:
        """The chunk's temporal measures (ShotRunner's per-shot report), once every frame has run."""
        return self._runner.finish()[0]
