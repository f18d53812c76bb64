"""DPX code values survive a round trip at every depth, agree with FFmpeg's DPX codec, and bad files are one line."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from op4ksr.video import dpx
from op4ksr.video.errors import FrameFileError
from op4ksr.video.frames import read_frame, write_frame


@pytest.mark.parametrize("bits", [8, 10, 12, 16])
@pytest.mark.parametrize("big_endian", [True, False])
def test_dpx_round_trip_keeps_code_values(bits, big_endian):
    samples = np.random.default_rng(bits).integers(0, 1 << bits, (5, 7, 3)).astype(np.uint16)
    read = dpx.read_dpx(dpx.write_dpx(samples, bits, big_endian=big_endian, transfer=6))
    assert read.bit_depth == bits and read.big_endian == big_endian and read.transfer == 6
    np.testing.assert_array_equal(read.samples, samples)


def test_ten_bit_dpx_agrees_with_ffmpeg_both_ways():
    av = pytest.importorskip("av")
    samples = np.random.default_rng(0).integers(0, 1024, (6, 9, 3)).astype(np.uint16)
    ours = dpx.write_dpx(samples, 10)
    frame = av.CodecContext.create("dpx", "r").decode(av.Packet(ours))[0]
    assert frame.format.name.startswith("gbrp10")
    np.testing.assert_array_equal(frame.to_ndarray(format="rgb48le") >> 6, samples)  # FFmpeg reads our file
    encoder = av.CodecContext.create("dpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = 9, 6, "gbrp10le", Fraction(1, 24)
    theirs = bytes((encoder.encode(av.VideoFrame.from_ndarray(samples, format="gbrp10le")) + encoder.encode(None))[0])
    np.testing.assert_array_equal(dpx.read_dpx(theirs).samples, samples)  # we read FFmpeg's file


def test_ten_bit_frame_file_round_trip_through_tensors(tmp_path):
    samples = np.random.default_rng(1).integers(0, 1024, (4, 6, 3)).astype(np.uint16)
    source = tmp_path / "reel.000101.dpx"
    source.write_bytes(dpx.write_dpx(samples, 10, big_endian=False, transfer=1, colorimetric=1))
    frame = read_frame(source)
    assert frame.bit_depth == 10 and frame.rgb.dtype == torch.float32
    write_frame(tmp_path / "out.dpx", frame.rgb, frame)
    again = dpx.read_dpx((tmp_path / "out.dpx").read_bytes())
    assert (again.bit_depth, again.big_endian, again.transfer, again.colorimetric) == (10, False, 1, 1)
    np.testing.assert_array_equal(again.samples, samples)


def test_truncated_dpx_is_one_line(tmp_path):
    data = dpx.write_dpx(np.zeros((8, 8, 3), np.uint16), 10)
    path = tmp_path / "cut.000001.dpx"
    path.write_bytes(data[:-100])
    with pytest.raises(FrameFileError, match=r"truncated DPX: 8x8 10-bit needs \d+ bytes, the file has \d+") as err:
        read_frame(path)
    assert "\n" not in str(err.value)


def test_an_unknown_frame_format_is_refused_naming_what_is_supported(tmp_path):
    path = tmp_path / "a.0001.cin"
    path.write_bytes(b"\x80\x2a\x5f\xd7")
    with pytest.raises(FrameFileError, match=r"\.cin frames are not supported \(DPX, TIFF, PNG or OpenEXR\)"):
        read_frame(path)
