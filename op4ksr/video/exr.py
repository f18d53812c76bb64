"""OpenEXR frames (half or float RGB, one part) read and written with the OpenEXR wheel, and the transfer
between their linear light and the display-referred [0, 1] the model was trained on.

EXR stores scene-linear values, often above 1 (highlights) and sometimes below 0; the model sees
sRGB-encoded pictures in [0, 1], as in its training photos. `video.exr_transfer`:
- `srgb` (default): linear clipped to [0, 1], encoded with the sRGB curve before the model, decoded
  back to linear after it;
- `none`: the values clipped to [0, 1] go to the model as they are (for EXRs that already hold
  display-referred values, e.g. a log or sRGB-encoded plate).
Either way values outside [0, 1] are clipped (counted in `clipped`, and in the sequence's report):
a model that takes HDR is not built. The output keeps the source's pixel type (half or float), its
compression and every header attribute but the ones that describe the pixels, plus op4ksr's
provenance as string attributes. RGBA, luma-chroma (Y/RY/BY), deep and multi-part files, and a
data window other than the display window, are refused in one line.
"""
from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

import numpy as np

from op4ksr.extras import require

TRANSFERS = ("srgb", "none")
PIXEL_TYPES = {1: "half", 2: "float"}  # the chlist's pixel type codes (0 is uint)
NUMPY_TYPES = {"half": np.float16, "float": np.float32}
HEADER_BYTES = 1 << 16  # read for a frame's geometry: EXR headers are a few hundred bytes to a few KiB
STRUCTURAL = ("channels", "dataWindow", "displayWindow", "type", "tiles", "chunkCount", "lineOrder")


class ExrError(ValueError):
    """An EXR file that this reader does not take (the message is one line)."""


@dataclass
class ExrSource:
    """What an EXR frame's output keeps of it."""

    pixel_type: str  # half | float
    transfer: str
    clipped: int  # samples outside [0, 1] before the transfer, clipped
    attributes: dict = field(default_factory=dict)  # header attributes to write back


def openexr():
    return require("OpenEXR", "video", "reading and writing OpenEXR frames")


def header_geometry(head: bytes, name: str) -> tuple[int, int, int]:
    """(width, height, bits per sample) from an EXR header's dataWindow and channel list, no pixels read."""
    if head[:4] != b"\x76\x2f\x31\x01":
        raise ExrError(f"{name}: not an OpenEXR file")
    pos, window, bits = 8, None, set()
    while pos < len(head) and head[pos] != 0:
        attr_name, pos = _cstring(head, pos)
        attr_type, pos = _cstring(head, pos)
        (size,) = struct.unpack_from("<i", head, pos)
        value = head[pos + 4:pos + 4 + size]
        pos += 4 + size
        if attr_name == "dataWindow" and attr_type == "box2i":
            x0, y0, x1, y1 = struct.unpack("<4i", value)
            window = (x1 - x0 + 1, y1 - y0 + 1)
        elif attr_name == "channels" and attr_type == "chlist":
            bits = _channel_bits(value)
    if window is None or not bits:
        raise ExrError(f"{name}: the EXR header has no dataWindow or channels in its first 64 KiB of header")
    return window[0], window[1], max(bits)


def _cstring(data: bytes, pos: int) -> tuple[str, int]:
    end = data.index(b"\x00", pos)
    return data[pos:end].decode("latin-1"), end + 1


def _channel_bits(chlist: bytes) -> set[int]:
    """Bits per sample of every channel in a chlist (uint and float 32, half 16)."""
    bits, pos = set(), 0
    while pos < len(chlist) and chlist[pos] != 0:
        _, pos = _cstring(chlist, pos)
        (pixel_type,) = struct.unpack_from("<i", chlist, pos)
        bits.add(16 if pixel_type == 1 else 32)
        pos += 16  # pixel type, pLinear + 3 reserved bytes, xSampling, ySampling
    return bits


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1's curve, linear [0, 1] -> encoded [0, 1]."""
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * np.power(linear, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """The inverse of srgb_encode, encoded [0, 1] -> linear [0, 1]."""
    return np.where(encoded <= 0.04045, encoded / 12.92, np.power((encoded + 0.055) / 1.055, 2.4))


def read_exr(data: bytes, name: str, transfer: str) -> tuple[np.ndarray, ExrSource]:
    """An EXR file's RGB for the model, (H, W, 3) float32 in [0, 1], and what its output keeps;
    ExrError (one line) for a file it does not take."""
    if transfer not in TRANSFERS:
        raise ValueError(f"exr transfer {transfer!r} is not one of {', '.join(TRANSFERS)}")
    exr = openexr()
    try:
        with exr.File(io.BytesIO(data)) as f:  # the file's header and channels are emptied when it closes
            parts = len(f.parts)
            header, channels = dict(f.header()), {k: c.pixels for k, c in f.channels().items()}
    except Exception as err:  # noqa: BLE001 - the library's reasons are many; each is one line
        raise ExrError(f"{name}: not a readable OpenEXR file ({' '.join(str(err).split())[:160]})") from err
    if parts != 1:
        raise ExrError(f"{name}: a multi-part EXR ({parts} parts): only single-part frames are built")
    if set(channels) != {"RGB"}:
        raise ExrError(f"{name}: EXR channels {', '.join(sorted(channels))}: only R, G, B frames are built "
                       "(alpha, luma-chroma, layers and deep data are not)")
    if not _same_window(header):
        raise ExrError(f"{name}: the EXR data window differs from its display window (overscan or a crop); "
                       "not built: conform the frames to the display window")
    samples = channels["RGB"]
    pixel_type = {np.dtype(np.float16): "half", np.dtype(np.float32): "float"}.get(samples.dtype)
    if pixel_type is None:
        raise ExrError(f"{name}: EXR samples of type {samples.dtype}: only half and float are built")
    values = samples.astype(np.float32)
    clipped = int(np.count_nonzero((values < 0) | (values > 1) | ~np.isfinite(values)))
    values = np.clip(np.nan_to_num(values, nan=0.0, posinf=1.0, neginf=0.0), 0, 1)
    rgb = srgb_encode(values) if transfer == "srgb" else values
    attributes = {k: v for k, v in header.items() if k not in STRUCTURAL}
    return rgb.astype(np.float32), ExrSource(pixel_type, transfer, clipped, attributes)


def _same_window(header: dict) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(header["dataWindow"], header["displayWindow"]))


def write_exr(rgb: np.ndarray, source: ExrSource, provenance: dict | None = None) -> bytes:
    """`rgb` (H, W, 3) in [0, 1] from the model, back through the transfer, as `source`'s pixel type."""
    values = srgb_decode(rgb.astype(np.float64)) if source.transfer == "srgb" else rgb
    samples = np.ascontiguousarray(values.astype(NUMPY_TYPES[source.pixel_type]))
    header = dict(source.attributes)
    header.update({f"op4ksr_{key}": str(value) for key, value in sorted((provenance or {}).items())})
    header["type"] = openexr().scanlineimage
    out = io.BytesIO()
    with openexr().File(header, {"RGB": samples}) as f:
        f.write(out)
    return out.getvalue()
