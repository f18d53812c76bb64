"""A video and a DPX sequence upscaled shot by shot: frames, times and sound kept; bad inputs one line."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.video import dpx
from op4ksr.video.errors import VideoInputError
from op4ksr.video.remaster import VideoSettings, remaster_sequence, remaster_video
from op4ksr.video.sequences import find_sequences
from tests.synthetic_video import (frame_times, moving_texture, stream_packets, with_flicker, woven,
                                   write_audio_only, write_video)

av = pytest.importorskip("av")
pytest.importorskip("cv2")
SETTINGS = VideoSettings(chunk_frames=4, chunk_overlap=1, flicker_threshold=0.02)


def double(rgb, size):
    return bicubic_resize(rgb[None], size)[0]


def twice(h, w):
    return 2 * h, 2 * w


def test_video_keeps_frames_times_and_audio_packets_and_finds_the_cut(tmp_path):
    frames = moving_texture(6, step=(0, 2), seed=1) + moving_texture(5, step=(1, 0), seed=2)
    # variable frame rate: the gaps between frames are not all equal
    pts = [0, 400, 800, 1300, 1700, 2100, 2500, 3000, 3400, 3800, 4300]
    source = tmp_path / "clip.mp4"
    write_video(source, frames, pts=pts, time_base=Fraction(1, 9600), audio_seconds=0.5)
    target = tmp_path / "out" / "clip.mkv"
    report = remaster_video(source, target, double, twice, SETTINGS)
    assert report["frames"] == 11 and report["cuts"] == [6]
    assert [(s["start"], s["end"]) for s in report["shots"]] == [(0, 6), (6, 11)]
    assert all(s <= c0 < c1 <= e for s, e, chunks in ((r["start"], r["end"], r["chunks"]) for r in report["shots"])
               for c0, c1 in chunks)
    source_times, output_times = frame_times(source), frame_times(target)
    assert len(output_times) == len(source_times) == 11
    assert output_times == pytest.approx(source_times, abs=0.00051)  # Matroska rounds to the millisecond
    assert stream_packets(target, "audio") == stream_packets(source, "audio")  # bytes and times, packet by packet
    with av.open(str(target)) as out:
        stream = out.streams.video[0]
        assert (stream.codec_context.name, stream.width, stream.height) == ("ffv1", 128, 96)


def test_a_failed_frame_is_filled_from_bicubic_and_marked(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(5, seed=3), codec="ffv1")
    calls = []

    def flaky(rgb, size):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return double(rgb, size)

    report = remaster_video(source, tmp_path / "o.mkv", flaky, twice, SETTINGS)
    (shot,) = report["shots"]
    assert report["frames_failed"] == 1
    assert shot["failed_frames"] == [{"frame": 2, "error": "RuntimeError: out of memory", "filled_from": "bicubic"}]
    assert len(frame_times(tmp_path / "o.mkv")) == 5


def test_ten_bit_dpx_sequence_is_written_back_with_its_frame_numbers(tmp_path):
    frames = with_flicker(moving_texture(4, size=(16, 24), seed=4), {2: 1.1})
    src, out = tmp_path / "scan", tmp_path / "out"
    src.mkdir()
    for n, f in enumerate(frames, start=1001):
        codes = (f.permute(1, 2, 0).numpy() * 1023 + 0.5).astype(np.uint16)
        (src / f"reel.{n:06d}.dpx").write_bytes(dpx.write_dpx(codes, 10))
    (sequence,), _ = find_sequences(src)
    report = remaster_sequence(sequence, out, lambda rgb, size: rgb.clone(), lambda h, w: (h, w), SETTINGS,
                               provenance={"model_id": "identity", "version": "0.1.0"})
    assert sorted(p.name for p in out.iterdir()) == [f"reel.{n:06d}.dpx" for n in range(1001, 1005)]
    for n in range(1001, 1005):  # an identity upscaler: every 10-bit code value comes back
        before, after = (dpx.read_dpx((d / f"reel.{n:06d}.dpx").read_bytes()) for d in (src, out))
        assert after.bit_depth == 10 and after.creator == "op4ksr model_id=identity version=0.1.0"
        np.testing.assert_array_equal(after.samples, before.samples)
    assert report["first_frame"] == 1001 and report["shots"][0]["frame_numbers"] == [1001, 1004]


def _one_line(err):
    assert "\n" not in str(err.value)
    return str(err.value)


def test_audio_only_file_is_one_line(tmp_path):
    path = tmp_path / "sound.m4a"
    write_audio_only(path)
    with pytest.raises(VideoInputError) as err:
        remaster_video(path, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert "no video stream (the file has audio)" in _one_line(err)


def test_one_frame_video_is_one_line(tmp_path):
    path = tmp_path / "still.mp4"
    write_video(path, moving_texture(1))
    with pytest.raises(VideoInputError) as err:
        remaster_video(path, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert "the video has 1 frame(s)" in _one_line(err)


def test_interlaced_video_is_refused_naming_the_option(tmp_path):
    path = tmp_path / "tv.mkv"
    write_video(path, moving_texture(3), interlaced=True)
    with pytest.raises(VideoInputError) as err:
        remaster_video(path, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert "interlaced video (field order tt)" in _one_line(err) and "video.deinterlace" in str(err.value)


def test_not_a_video_is_one_line(tmp_path):
    path = tmp_path / "x.mp4"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(VideoInputError) as err:
        remaster_video(path, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert "not a readable video file" in _one_line(err)


def test_frames_out_keep_the_model_size_guard(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(3, seed=5), codec="ffv1")
    report = remaster_video(source, tmp_path / "o.mkv", lambda rgb, size: torch.zeros(3, 4, 4), twice, SETTINGS)
    assert report["frames_failed"] == 3  # a wrong-sized output is a failed frame, filled, never written as is


def test_a_corrupt_packet_mid_video_is_named_and_every_frame_still_written(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(10, seed=8, step=(0, 1)), codec="mpeg4")
    with av.open(str(source)) as container:  # damage the middle of the 6th video packet in place
        packet = [p for p in container.demux(video=0) if p.size][5]
        start, size = packet.pos, packet.size
    data = bytearray(source.read_bytes())
    data[start + size // 2:start + size] = bytes(size - size // 2)
    source.write_bytes(bytes(data))
    report = remaster_video(source, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert report["frames"] == 10 and report["decode_error"] is None
    assert 5 in report["corrupt_source_frames"] and 0 not in report["corrupt_source_frames"]
    assert len(frame_times(tmp_path / "o.mkv")) == 10


def test_a_video_that_stops_decoding_half_way_is_written_up_to_there(tmp_path, monkeypatch):
    from op4ksr.video import decode

    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(8, seed=9), codec="ffv1")
    real = decode.decode_video

    def stops_after_five(info, packets=None, **options):  # what FFmpeg raising on a broken packet at frame 5 looks like
        for frame in real(info, packets, **options):
            if frame.index == 5:
                raise VideoInputError(f"{info.path}: the video cannot be decoded past frame 5 (Invalid data)")
            yield frame

    monkeypatch.setattr(decode, "decode_video", stops_after_five)
    report = remaster_video(source, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert report["frames"] == 5 and "cannot be decoded past frame 5" in report["decode_error"]
    assert len(frame_times(tmp_path / "o.mkv")) == 5


class Killed(BaseException):
    """What a killed process looks like to the loop: not an Exception, so nothing catches it as a failed frame."""


def test_a_killed_sequence_run_resumes_with_every_frame_exactly_once(tmp_path):
    src, out = tmp_path / "scan", tmp_path / "out"
    src.mkdir()
    for n, f in enumerate(moving_texture(6, size=(16, 24), seed=10), start=1):
        (src / f"r.{n:04d}.dpx").write_bytes(dpx.write_dpx((f.permute(1, 2, 0).numpy() * 1023).astype(np.uint16), 10))
    (sequence,), _ = find_sequences(src)
    upscaled = []

    def upscale(rgb, size, kill_at=None, fail_at=None):
        if len(upscaled) == kill_at:
            raise Killed()
        upscaled.append(float(rgb.mean()))
        if len(upscaled) == fail_at:
            raise RuntimeError("model error")
        return double(rgb, size)

    with pytest.raises(Killed):  # frame 2 fails (filled from bicubic), the run is killed before frame 4
        remaster_sequence(sequence, out, lambda r, s: upscale(r, s, kill_at=4, fail_at=2), twice, SETTINGS)
    assert sorted(p.name for p in out.glob("*.dpx")) == [f"r.{n:04d}.dpx" for n in (1, 2, 3, 4)]
    assert (out / "r.failed.txt").read_text() == "2\n"
    first = len(upscaled)
    report = remaster_sequence(sequence, out, upscale, twice, SETTINGS)
    # the rerun upscales frame 2 again (it had failed) and frames 5 and 6 (never written), nothing else
    assert len(upscaled) - first == 3 and report["frames_resumed"] == 3 and report["frames_failed"] == 0
    assert sorted(p.name for p in out.glob("*.dpx")) == [f"r.{n:04d}.dpx" for n in range(1, 7)]
    assert not (out / "r.failed.txt").exists() and not list(out.glob("*.part"))


def test_colour_tags_are_kept_and_the_ffv1_stream_says_rgb(tmp_path):
    from op4ksr.video.decode import probe

    source = tmp_path / "tagged.mkv"
    bt709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}  # BT.709, limited range
    write_video(source, moving_texture(3, seed=11), codec="ffv1", colour=bt709)
    assert probe(source).colour == bt709
    remaster_video(source, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert probe(tmp_path / "o.mkv").colour == {**bt709, "colorspace": 0}  # the pixels are RGB: no matrix


def test_combed_video_tagged_progressive_is_refused_by_its_measured_comb_score(tmp_path):
    from op4ksr.video.interlace import comb_score

    fields = moving_texture(12, size=(48, 64), step=(0, 3), seed=12)
    combed = woven(fields)
    assert max(comb_score(f) for f in fields) < 1 < 1.2 < min(comb_score(f) for f in combed)
    path = tmp_path / "woven.mkv"
    write_video(path, combed, codec="ffv1")  # the stream says nothing about fields
    with pytest.raises(VideoInputError) as err:
        remaster_video(path, tmp_path / "o.mkv", double, twice, SETTINGS)
    assert "6 of 6 frames are combed" in _one_line(err) and "video.deinterlace" in str(err.value)


def test_a_killed_video_run_leaves_no_output_that_looks_whole(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(4, seed=13), codec="ffv1")

    calls = []

    def killed_at_frame_two(rgb, size):
        calls.append(1)
        if len(calls) == 3:
            raise Killed()
        return double(rgb, size)

    with pytest.raises(Killed):
        remaster_video(source, tmp_path / "o.mkv", killed_at_frame_two, twice, SETTINGS)
    assert not (tmp_path / "o.mkv").exists() and (tmp_path / "o.part.mkv").exists()
    remaster_video(source, tmp_path / "o.mkv", double, twice, SETTINGS)  # the rerun redoes the video whole
    assert len(frame_times(tmp_path / "o.mkv")) == 4 and not (tmp_path / "o.part.mkv").exists()


def test_a_configured_codec_in_mov_keeps_the_exact_time_base_and_timestamps(tmp_path):
    frames = moving_texture(5, seed=14)
    source = tmp_path / "clip.mp4"
    write_video(source, frames, pts=[0, 400, 900, 1300, 1700], time_base=Fraction(1, 9600), audio_seconds=0.3)
    target = tmp_path / "o.mov"
    report = remaster_video(source, target, double, twice, VideoSettings(codec="mpeg4", measure_flow=False))
    assert report["frames"] == 5
    with av.open(str(source)) as src, av.open(str(target)) as out:  # (MP4/MOV raise a timescale under 10000)
        assert out.streams.video[0].time_base == src.streams.video[0].time_base == Fraction(1, 19200)
    assert frame_times(target) == frame_times(source)  # exactly
    assert stream_packets(target, "audio") == stream_packets(source, "audio")


def test_the_report_prices_a_frame_and_a_minute_of_footage_in_wall_seconds(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(6, seed=15), codec="ffv1", fps=24)
    report = remaster_video(source, tmp_path / "o.mkv", double, twice, SETTINGS)
    timing = report["timing"]
    assert timing["footage_seconds"] == pytest.approx(6 / 24, abs=0.002)
    assert 0 < timing["upscale_seconds"] < timing["seconds"]
    assert timing["seconds_per_frame"] == pytest.approx(timing["seconds"] / 6, rel=0.01)
    assert timing["seconds_per_footage_minute"] == pytest.approx(timing["seconds"] * 60 / (6 / 24), rel=0.01)


@pytest.mark.parametrize("codec, message", [("nosuchcodec", "has no such encoder"), ("aac", "an encoder of audio")])
def test_a_codec_that_cannot_encode_video_is_one_line_before_any_work(tmp_path, codec, message):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(2), codec="ffv1")
    with pytest.raises(VideoInputError) as err:
        remaster_video(source, tmp_path / "o.mkv", double, twice, VideoSettings(codec=codec))
    assert message in _one_line(err) and not (tmp_path / "o.part.mkv").exists()
