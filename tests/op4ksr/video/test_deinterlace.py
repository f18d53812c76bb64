"""Interlaced video deinterlaced before the model (video.deinterlace=bwdif|yadif): combing gone, frames and
times kept, the report saying which filter and field order; without the option, one line naming it."""
from __future__ import annotations

import pytest

from op4ksr.imageops import bicubic_resize
from op4ksr.video import decode
from op4ksr.video.deinterlace import parity_for
from op4ksr.video.errors import VideoInputError
from op4ksr.video.interlace import COMB_RATIO, comb_score
from op4ksr.video.remaster import VideoSettings, remaster_video
from tests.synthetic_video import frame_times, moving_texture, woven, write_video

av = pytest.importorskip("av")
pytest.importorskip("cv2")


def _recording_upscaler(seen):
    def upscale(rgb, size):
        seen.append(rgb)
        return bicubic_resize(rgb[None], size)[0]
    return upscale


def _source_combs(path):
    info = decode.probe(path, allow_interlaced=True)
    return [comb_score(f.rgb) for f in decode.decode_video(info, refuse_interlaced=False)]


def test_a_stream_tagged_interlaced_is_deinterlaced_with_bwdif_before_the_model(tmp_path):
    source = tmp_path / "tv.mkv"
    write_video(source, woven(moving_texture(12, step=(0, 4), seed=12)), interlaced=True)  # mpeg4, field order tt
    assert min(_source_combs(source)) > COMB_RATIO  # the premise: every source frame is combed
    seen = []
    report = remaster_video(source, tmp_path / "o.mkv", _recording_upscaler(seen), lambda h, w: (h, w),
                            VideoSettings(deinterlace="bwdif"))
    assert report["deinterlace"]["filter"] == "bwdif" and report["deinterlace"]["field_order"] == "tff"
    assert report["deinterlace"]["because"] == "the stream says field order tt"
    assert report["deinterlace"]["combed_frames_after"] == 0
    assert len(seen) == report["frames"] == 6
    assert max(comb_score(f) for f in seen) < 1 < COMB_RATIO  # what the model got is not combed
    assert frame_times(tmp_path / "o.mkv") == pytest.approx(frame_times(source), abs=0.00051)  # ms in Matroska


def test_combed_frames_the_stream_calls_progressive_are_deinterlaced_with_yadif(tmp_path):
    source = tmp_path / "woven.mkv"
    write_video(source, woven(moving_texture(12, step=(0, 3), seed=12)), codec="ffv1")  # no field order
    seen = []
    report = remaster_video(source, tmp_path / "o.mkv", _recording_upscaler(seen), lambda h, w: (h, w),
                            VideoSettings(deinterlace="yadif", field_order="tff"))
    assert report["deinterlace"]["because"] == f"6 of 6 frames combed (comb score over {COMB_RATIO})"
    assert report["deinterlace"]["filter"] == "yadif" and report["deinterlace"]["field_order"] == "tff"
    assert report["deinterlace"]["largest_comb_after"] < COMB_RATIO
    assert max(comb_score(f) for f in seen) < COMB_RATIO and len(seen) == 6
    assert frame_times(tmp_path / "o.mkv") == pytest.approx(frame_times(source), abs=0.00051)


def test_progressive_video_is_not_touched_when_deinterlacing_is_allowed(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, moving_texture(4, seed=3), codec="ffv1")
    seen, plain = [], []
    report = remaster_video(source, tmp_path / "o.mkv", _recording_upscaler(seen), lambda h, w: (h, w),
                            VideoSettings(deinterlace="bwdif"))
    remaster_video(source, tmp_path / "p.mkv", _recording_upscaler(plain), lambda h, w: (h, w), VideoSettings())
    assert report["deinterlace"] is None
    assert all(a.equal(b) for a, b in zip(seen, plain)) and len(seen) == 4


def test_interlaced_without_the_option_is_still_one_line_naming_it(tmp_path):
    source = tmp_path / "tv.mkv"
    write_video(source, woven(moving_texture(6, step=(0, 3), seed=2)), interlaced=True)
    with pytest.raises(VideoInputError) as err:
        remaster_video(source, tmp_path / "o.mkv", _recording_upscaler([]), lambda h, w: (h, w), VideoSettings())
    assert "\n" not in str(err.value) and "video.deinterlace=bwdif" in str(err.value)


@pytest.mark.parametrize("setting, stream, parity", [
    ("auto", "tt", "tff"), ("auto", "bt", "tff"), ("auto", "bb", "bff"), ("auto", "tb", "bff"),
    ("auto", "unknown", "auto"), ("auto", "progressive", "auto"), ("bff", "tt", "bff"), ("tff", "bb", "tff")])
def test_field_order_is_the_configured_one_else_the_one_displayed_first(setting, stream, parity):
    assert parity_for(setting, stream) == parity
