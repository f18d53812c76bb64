"""OpenEXR frame sequences: half or float in, the same out, through the documented transfer (sRGB-encoded
for the model, decoded back to linear); header kept, provenance added; what is not built is one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from op4ksr.imageops import bicubic_resize
from op4ksr.video.errors import FrameFileError, SequenceError
from op4ksr.video.exr import srgb_decode, srgb_encode
from op4ksr.video.frames import check_uniform, frame_geometry, read_frame
from op4ksr.video.remaster import VideoSettings, remaster_sequence
from op4ksr.video.sequences import find_sequences
from tests.synthetic_video import moving_texture

OpenEXR = pytest.importorskip("OpenEXR")
pytest.importorskip("cv2")
SETTINGS = VideoSettings(measure_flow=False)


def _write(path, channels: dict, **header):
    with OpenEXR.File({"compression": OpenEXR.PIZ_COMPRESSION, "type": OpenEXR.scanlineimage, **header},
                      {name: np.ascontiguousarray(a) for name, a in channels.items()}) as f:  # it ignores strides
        f.write(str(path))


def _read(path):
    with OpenEXR.File(str(path)) as f:  # copied out: a closed File empties its header and channels
        return dict(f.header()), f.channels()["RGB"].pixels.copy()


def _linear_sequence(folder, dtype, frames=3, size=(16, 24)):
    """Linear-light frames of a panning texture, one sample of each frame pushed over 1 (a highlight)."""
    folder.mkdir()
    written = []
    for n, frame in enumerate(moving_texture(frames, size=size, seed=7), start=101):
        linear = srgb_decode(frame.permute(1, 2, 0).numpy().astype(np.float64)).astype(dtype)
        linear[0, 0, 0] = 4.0
        _write(folder / f"plate.{n:04d}.exr", {"RGB": linear}, owner="scan dept")
        written.append(linear)
    return written


def test_half_frames_come_back_half_with_their_linear_values_header_and_provenance(tmp_path):
    written = _linear_sequence(tmp_path / "plates", np.float16)
    (sequence,), _ = find_sequences(tmp_path / "plates")
    seen = []

    def identity(rgb, size):
        seen.append(rgb)
        return rgb.clone()

    report = remaster_sequence(sequence, tmp_path / "out", identity, lambda h, w: (h, w), SETTINGS,
                               provenance={"model_id": "identity", "version": "0.1.0"})
    assert report["exr"] == {"transfer": "srgb", "samples_clipped": 3}  # the 4.0 of each frame
    assert report["source_bit_depth"] == 16
    for n, linear in enumerate(written, start=101):
        header, out = _read(tmp_path / "out" / f"plate.{n:04d}.exr")
        assert out.dtype == np.float16 and out.shape == linear.shape
        assert header["owner"] == "scan dept" and header["op4ksr_model_id"] == "identity"
        assert header["compression"] == OpenEXR.PIZ_COMPRESSION
        expected = np.clip(linear.astype(np.float32), 0, 1)
        # sRGB there and back in float32, then rounded to half: within one half step of the source
        np.testing.assert_allclose(out.astype(np.float32), expected, rtol=2 ** -10, atol=2 ** -24)
        assert out[0, 0, 0] == 1.0  # the highlight is clipped: a model that takes HDR is not built
    grey = seen[0].permute(1, 2, 0).numpy()  # the model saw the sRGB encoding of the linear values
    np.testing.assert_allclose(grey, srgb_encode(np.clip(written[0].astype(np.float32), 0, 1)), atol=1e-6)


def test_float_frames_upscaled_with_transfer_none_stay_float_and_linear(tmp_path):
    written = _linear_sequence(tmp_path / "plates", np.float32, frames=2)
    (sequence,), _ = find_sequences(tmp_path / "plates")

    def double(rgb, size):
        return bicubic_resize(rgb[None], size)[0]

    report = remaster_sequence(sequence, tmp_path / "out", double, lambda h, w: (2 * h, 2 * w),
                               VideoSettings(measure_flow=False, exr_transfer="none"))
    assert report["exr"]["transfer"] == "none" and report["source_bit_depth"] == 32
    _, out = _read(tmp_path / "out" / "plate.0101.exr")
    source = torch.from_numpy(np.clip(written[0], 0, 1)).permute(2, 0, 1)
    expected = bicubic_resize(source[None], (32, 48))[0].clamp(0, 1).permute(1, 2, 0).numpy()
    assert out.dtype == np.float32 and out.shape == (32, 48, 3)
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_geometry_comes_from_the_header_and_mixed_pixel_types_are_one_line(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _write(folder / "m.0001.exr", {"RGB": np.zeros((6, 10, 3), np.float16)})
    _write(folder / "m.0002.exr", {"RGB": np.zeros((6, 10, 3), np.float32)})
    assert frame_geometry(folder / "m.0001.exr") == (10, 6, 16)
    assert frame_geometry(folder / "m.0002.exr") == (10, 6, 32)
    (sequence,), _ = find_sequences(folder)
    with pytest.raises(SequenceError, match="mixed bit depths: frame 1 is 10x6 16-bit, frame 2 is 10x6 32-bit"):
        check_uniform(sequence)


@pytest.mark.parametrize("channels, message", [
    ({"R": 1, "G": 1, "B": 1, "A": 1}, "EXR channels RGBA: only R, G, B frames are built"),
    ({"Y": 1}, "EXR channels Y: only R, G, B frames are built")])
def test_what_is_not_built_is_one_line(tmp_path, channels, message):
    path = tmp_path / "a.0001.exr"
    _write(path, {name: np.zeros((4, 4), np.float16) for name in channels})
    with pytest.raises(FrameFileError, match=message) as err:
        read_frame(path)
    assert "\n" not in str(err.value)


def test_a_file_that_is_not_exr_is_one_line(tmp_path):
    path = tmp_path / "a.0001.exr"
    path.write_bytes(b"\x76\x2f\x31\x01" + b"\x00" * 12)
    with pytest.raises(FrameFileError, match="not a readable OpenEXR file") as err:
        read_frame(path)
    assert "\n" not in str(err.value)
    path.write_bytes(b"PNG?" * 8)
    with pytest.raises(FrameFileError, match="not an OpenEXR file"):
        frame_geometry(path)


def test_a_multi_part_file_is_one_line(tmp_path):
    path = tmp_path / "a.0001.exr"
    rgb = np.zeros((4, 4, 3), np.float16)
    parts = [OpenEXR.Part({"type": OpenEXR.scanlineimage}, {"RGB": rgb}, name) for name in ("left", "right")]
    with OpenEXR.File(parts) as f:
        f.write(str(path))
    with pytest.raises(FrameFileError, match="a multi-part EXR \\(2 parts\\): only single-part frames are built"):
        read_frame(path)


def test_overscan_is_one_line(tmp_path):
    path = tmp_path / "a.0001.exr"
    display = (np.array([0, 0], np.int32), np.array([7, 7], np.int32))  # the pixels are 4x4 of an 8x8 frame
    _write(path, {"RGB": np.zeros((4, 4, 3), np.float16)}, displayWindow=display)
    with pytest.raises(FrameFileError, match="the EXR data window differs from its display window"):
        read_frame(path)
