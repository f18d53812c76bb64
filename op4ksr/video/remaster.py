"""Upscaling a video file or a frame sequence shot by shot, in-process: the output and a per-shot report.

Two passes over the source. The first decodes every frame to a small luma thumbnail and finds the
cuts (op4ksr.video.shots), so the shots are known before any output is written. The second
decodes again and upscales frame by frame in order: a frame starts a new shot's temporal meter at
a cut, so no measure compares frames across a cut. A frame the upscaler fails on is filled with
its bicubic upscale and named in its shot's `failed_frames`; the output keeps every frame.
Memory stays bounded: one decoded frame, its outputs and the previous pair are held at a time.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from op4ksr.errors import UserError
from op4ksr.imageops import bicubic_resize
from op4ksr.video import decode
from op4ksr.video.charts import profile_row, save_profile
from op4ksr.video.deinterlace import DeinterlacePlan, parity_for
from op4ksr.video.encode import VideoWriter, check_encoder
from op4ksr.video.errors import VideoInputError
from op4ksr.video.first_pass import first_pass
from op4ksr.video.frames import check_uniform, read_frame, write_frame
from op4ksr.video.fusion import ChunkedFusion
from op4ksr.video.interlace import COMB_RATIO
from op4ksr.video.provenance_tags import sign_video, video_lineage
from op4ksr.video.sequences import FrameSequence
from op4ksr.video.settings import VideoSettings  # noqa: F401 - importable from here
from op4ksr.video.shots import CutScores, Shot, chunk_shot, luma_thumbnail, shots_from_cuts
from op4ksr.video.temporal import TemporalMeter
from op4ksr.video.video_parts import split_packets

Upscaler = Callable[[torch.Tensor, tuple[int, int]], torch.Tensor]  # (3, h, w), (H, W) -> (3, H, W)


class ShotRunner:
    """Upscales frames in order, measuring each shot and filling failed frames from bicubic."""

    def __init__(self, upscale: Upscaler, size: tuple[int, int], shots: list[Shot], settings: VideoSettings):
        self.upscale, self.size, self.settings = upscale, size, settings
        self.shots = shots
        self.reports: list[dict] = []
        self._shot = -1
        self._meter: TemporalMeter | None = None
        self._failed: list[dict] = []
        self._fusion: ChunkedFusion | None = None
        self.resumed = 0  # frames whose output an earlier run wrote
        self.upscale_seconds = 0.0  # wall time inside the upscaler
        self.profile: list[np.ndarray] = []  # the middle row of each output (op4ksr.video.charts)

    def run(self, index: int, rgb: torch.Tensor, done: torch.Tensor | None = None) -> torch.Tensor:
        """The output of frame `index` (3, H, W); frames must come in order. `done`: the frame's output
        from an earlier run (read back from disk), measured and kept instead of upscaling again."""
        while self._shot < 0 or index >= self.shots[self._shot].end:
            self._close_shot()
            self._shot += 1
            self._meter, self._failed = TemporalMeter(flow=self.settings.measure_flow), []
            self._fusion = None if self.settings.temporal != "flow" else ChunkedFusion(
                chunk_shot(self.shots[self._shot], self.settings.chunk_frames, self.settings.chunk_overlap),
                self.settings.temporal_weight)
        bicubic = bicubic_resize(rgb[None], self.size)[0].clamp(0, 1)
        if done is not None:
            self.resumed += 1
            return self._measured(index, done, bicubic, already_fused=True)
        started = time.perf_counter()
        try:
            output = self.upscale(rgb, self.size).clamp(0, 1)
            if tuple(output.shape) != (3, *self.size):
                raise ValueError(f"the upscaler returned {tuple(output.shape)}, not (3, {self.size[0]}, {self.size[1]})")
        except Exception as err:  # noqa: BLE001 - one failed frame is filled and marked; the shot goes on
            output = bicubic
            self._failed.append({"frame": index, "error": f"{type(err).__name__}: {err}", "filled_from": "bicubic"})
        self.upscale_seconds += time.perf_counter() - started
        return self._measured(index, output, bicubic)

    def _measured(self, index: int, output: torch.Tensor, bicubic: torch.Tensor,
                  already_fused: bool = False) -> torch.Tensor:
        if self._fusion is None:
            self._meter.add(output, bicubic)
        else:
            output = self._fusion.apply(index, output, bicubic, already_fused)
            self._meter.add(output, bicubic, self._fusion.pair)
        self.profile.append(profile_row(output))
        return output

    @property
    def failures(self) -> int:
        """Frames filled from bicubic so far, in every shot."""
        return sum(len(r["failed_frames"]) for r in self.reports) + len(self._failed)

    def _close_shot(self) -> None:
        if self._meter is None:
            return
        shot = self.shots[self._shot]
        chunks = chunk_shot(shot, self.settings.chunk_frames, self.settings.chunk_overlap)
        self.reports.append({"shot": self._shot, "start": shot.start, "end": shot.end,
                             "chunks": [[c.start, c.end] for c in chunks], "failed_frames": self._failed,
                             **self._meter.measures.summary(self.settings.flicker_threshold)})
        self._meter = None

    def finish(self) -> list[dict]:
        """The per-shot reports (call after the last frame)."""
        self._close_shot()
        return self.reports


def _report(source: Path, output: Path, frames: int, cuts: list[int], scores: list[float],
            shots: list[dict], settings: VideoSettings, **extra) -> dict:
    failed = sum(len(s["failed_frames"]) for s in shots)
    return {"source": str(source), "output": str(output), "frames": frames, "cuts": cuts,
            "cut_scores": [round(s, 4) for s in scores], "settings": settings.__dict__, **extra,
            "frames_failed": failed, "shots": shots}


def _timing(started: float, runner: ShotRunner, frames: int, footage_seconds: float | None = None) -> dict:
    """Wall seconds in all and in the upscaler, per frame, and per minute of footage where it is known."""
    total = time.perf_counter() - started
    timing = {"seconds": round(total, 3), "upscale_seconds": round(runner.upscale_seconds, 3),
              "seconds_per_frame": round(total / max(frames, 1), 4)}
    if footage_seconds:
        timing.update(footage_seconds=round(footage_seconds, 3),
                      seconds_per_footage_minute=round(total * 60 / footage_seconds, 2))
    return timing


def remaster_video(source: Path, target: Path, upscale: Upscaler, plan_size: Callable[[int, int], tuple[int, int]],
                   settings: VideoSettings, profile: Path | None = None, provenance: dict | None = None,
                   signer=None, embed: bool = True) -> dict:
    """Write the upscaled `source` to `target`; the report (module docstring); `profile`: where to save
    the temporal profile PNG (op4ksr.video.charts); `provenance` (version, model id): the output's
    tags and XMP, and with a `signer` (a ManifestSigner) its C2PA manifest, embedded or in the
    `<target>.c2pa` sidecar (op4ksr.video.provenance_tags). VideoInputError for a file
    that is not a usable video. A video that stops decoding half-way is written up to there, and the
    report's `decode_error` says where; frames the decoder concealed damage in are `corrupt_source_frames`."""
    check_encoder(settings.codec)  # before an hour of decoding, not after
    started = time.perf_counter()
    info = decode.probe(source, allow_interlaced=settings.deinterlace != "refuse")
    scores, decode_error, deinterlace, deinterlaced = _cuts_and_deinterlace(info, settings)
    decoded = len(scores.scores)
    cuts = scores.cuts(settings.cut_threshold)
    shots = shots_from_cuts(cuts, decoded)
    size = plan_size(info.height, info.width)
    runner, written, corrupt, times = ShotRunner(upscale, size, shots, settings), 0, [], []
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.part{target.suffix}")  # the extension names the container
    with decode.av_module().open(str(source)) as container:
        lineage = video_lineage(source, provenance, (info.height, info.width), size) if provenance else None
        writer = VideoWriter(partial, info, container, size, settings.codec, lineage)
        try:
            packets = split_packets(container, info.stream_index, writer)
            for frame in decode.decode_video(info, packets, deinterlace=deinterlace):
                if frame.index >= decoded:
                    break  # the first pass stopped here: never write a frame the cuts did not see
                writer.write(runner.run(frame.index, frame.rgb), frame.pts)
                written += 1
                times.append(frame.pts)
                if frame.corrupt:
                    corrupt.append(frame.index)
        except VideoInputError:
            pass  # the same decode error as the first pass's, reported once as decode_error
        finally:
            writer.close()
    signed = {"c2pa": "none"}
    if signer is not None and lineage is not None:  # before the rename: a target that exists is signed too
        signed = sign_video(signer, partial, source, lineage, Path(f"{target}.c2pa"), embed)
    partial.replace(target)  # a target that exists is a whole video: a killed run leaves only the .part file
    if profile is not None and runner.profile:
        save_profile(runner.profile, profile)
    return _report(source, target, written, cuts, scores.scores, runner.finish(), settings, time_base=str(info.time_base),
                   source_bit_depth=info.bit_depth, size=list(size), corrupt_source_frames=corrupt,
                   deinterlace=deinterlaced, **signed,
                   decode_error=decode_error, streams_not_copied=writer.not_copied,
                   timing=_timing(started, runner, written, _footage_seconds(times, info)))


def _cuts_and_deinterlace(info, settings: VideoSettings) -> tuple[CutScores, str | None, DeinterlacePlan | None,
                                                                 dict | None]:
    """Every frame's cut score, the decode error that ended the pass early (None if none), and how the
    video is deinterlaced with what the report says of it (None, None if it is not: progressive).
    Refuses a video of fewer than 2 frames, or one that says or measures interlaced under `refuse`."""
    plan = None
    if info.field_order in decode.INTERLACED and settings.deinterlace != "refuse":
        plan = _plan(info, settings, f"the stream says field order {info.field_order}")
    measured = first_pass(info, plan, refuse_interlaced=settings.deinterlace == "refuse")
    scores, combs, flagged, decode_error = measured.scores, measured.combs, measured.flagged, measured.decode_error
    decode.checked_frame_count(info, len(scores.scores))
    if plan is None and (flagged or combs.interlaced):
        if settings.deinterlace == "refuse":
            raise VideoInputError(f"{info.path}: {combs.combed} of {combs.frames} frames are combed (comb score "
                                  f"over {COMB_RATIO}, up to {combs.largest:.2f}): it looks interlaced though its "
                                  f"stream says {info.field_order}; set video.deinterlace=bwdif (or yadif) to "
                                  "deinterlace it before the model")
        plan = _plan(info, settings, f"{flagged} frames flagged interlaced" if flagged else
                     f"{combs.combed} of {combs.frames} frames combed (comb score over {COMB_RATIO})")
        measured = first_pass(info, plan)  # the cuts of the frames the model will see
        scores, combs, decode_error = measured.scores, measured.combs, measured.decode_error
    if plan is None:
        return scores, decode_error, None, None
    return scores, decode_error, plan, {**plan.report(), "combed_frames_after": combs.combed,
                                        "largest_comb_after": round(combs.largest, 3)}


def _plan(info, settings: VideoSettings, because: str) -> DeinterlacePlan:
    return DeinterlacePlan(settings.deinterlace, parity_for(settings.field_order, info.field_order), because)


def _footage_seconds(pts: list[int], info) -> float | None:
    """The written frames' duration: first to last timestamp plus one frame at the average rate."""
    if len(pts) < 2 or not info.average_rate:
        return None
    return float((max(pts) - min(pts)) * info.time_base + 1 / info.average_rate)


def remaster_sequence(sequence: FrameSequence, out_dir: Path, upscale: Upscaler,
                      plan_size: Callable[[int, int], tuple[int, int]], settings: VideoSettings,
                      resume: bool = True, profile: Path | None = None, provenance: dict | None = None) -> dict:
    """Write the upscaled frames of `sequence` to `out_dir` with the same names, format and bit depth; the
    report. `resume`: a frame whose output file exists (written whole: a `.part` file renamed) is read
    back and measured, not upscaled again, so a killed run's rerun does only the missing frames. A frame
    filled from bicubic is listed in `<name>.failed.txt` as it fails, and a rerun upscales it again.
    `provenance` (version, model id) goes into each written frame where its format has room."""
    started = time.perf_counter()
    width, height, bit_depth = check_uniform(sequence)
    scores, transfer, clipped = CutScores(), settings.exr_transfer, 0
    for file in sequence.frames:
        scores.add(luma_thumbnail(read_frame(file.path, transfer).rgb))
    cuts = scores.cuts(settings.cut_threshold)
    shots = shots_from_cuts(cuts, len(sequence.frames))
    size = plan_size(height, width)
    runner = ShotRunner(upscale, size, shots, settings)
    failed_list = out_dir / f"{sequence.name}.failed.txt"
    retry = set(failed_list.read_text().split()) if resume and failed_list.is_file() else set()
    failed_list.unlink(missing_ok=True)
    for index, file in enumerate(sequence.frames):
        frame, target = read_frame(file.path, transfer), out_dir / sequence.frame_name(file.number)
        clipped += frame.exr_source.clipped if frame.exr_source else 0
        done = _done_output(target, size, transfer) if resume and str(file.number) not in retry else None
        failures = runner.failures
        output = runner.run(index, frame.rgb, done)
        if done is None:
            write_frame(target, output, frame, provenance)
        if runner.failures > failures:
            with failed_list.open("a") as f:
                f.write(f"{file.number}\n")
    if profile is not None:
        save_profile(runner.profile, profile)
    numbers = [f.number for f in sequence.frames]
    return _report(sequence.directory / sequence.label, out_dir / sequence.label, len(numbers),
                   [numbers[c] for c in cuts], scores.scores, _with_frame_numbers(runner.finish(), numbers), settings,
                   first_frame=numbers[0], source_bit_depth=bit_depth, size=list(size), frames_resumed=runner.resumed,
                   **({"exr": {"transfer": transfer, "samples_clipped": clipped}} if frame.exr_source else {}),
                   timing=_timing(started, runner, len(numbers)))


def _done_output(target: Path, size: tuple[int, int], exr_transfer: str) -> torch.Tensor | None:
    """The output an earlier run wrote at `target`, if it is there, readable and of the planned size."""
    if not target.is_file():
        return None
    try:
        rgb = read_frame(target, exr_transfer).rgb
    except UserError:
        return None
    return rgb if tuple(rgb.shape[-2:]) == tuple(size) else None


def _with_frame_numbers(shots: list[dict], numbers: list[int]) -> list[dict]:
    """Shot bounds and failed frames also as the sequence's own frame numbers (first, last)."""
    for shot in shots:
        shot["frame_numbers"] = [numbers[shot["start"]], numbers[shot["end"] - 1]]
        for failed in shot["failed_frames"]:
            failed["frame_number"] = numbers[failed["frame"]]
    return shots
