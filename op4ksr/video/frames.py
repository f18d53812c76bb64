"""Frame files of a sequence <-> float tensors, written back in the same format and bit depth.

PNG and TIFF (8 or 16 bits) go through op4ksr.images.codec, which keeps 16 bits, the ICC profile
and the metadata; DPX (8/10/12/16-bit RGB) through op4ksr.video.dpx, which keeps the code values,
byte order, transfer and colorimetric codes; OpenEXR (half or float RGB) through op4ksr.video.exr,
which keeps the pixel type and header, through the transfer `exr_transfer` names.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from op4ksr.images import png16
from op4ksr.images.codec import DecodedImage, ImageDecodeError, decode_image, encode_image
from op4ksr.video import dpx, exr
from op4ksr.video.errors import FrameFileError, SequenceError
from op4ksr.video.sequences import FrameSequence


@dataclass
class Frame:
    rgb: torch.Tensor  # (3, h, w) float32 in [0, 1]
    bit_depth: int
    kind: str  # "dpx", "png", "tiff" or "exr"
    image: DecodedImage | None = None  # PNG/TIFF: the decoded source, for encode_image's metadata
    dpx_header: dpx.DpxFrame | None = None  # DPX: byte order, transfer, colorimetric (samples dropped)
    exr_source: exr.ExrSource | None = None  # EXR: pixel type, transfer, header attributes, clipped samples


def frame_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    kind = {".dpx": "dpx", ".png": "png", ".tif": "tiff", ".tiff": "tiff", ".exr": "exr"}.get(suffix)
    if kind is None:
        raise FrameFileError(f"{path}: {suffix} frames are not supported (DPX, TIFF, PNG or OpenEXR)")
    return kind


def read_frame(path: Path, exr_transfer: str = "srgb") -> Frame:
    """A frame file as a float tensor with its bit depth; FrameFileError (one line) if it cannot be read.
    `exr_transfer`: how an EXR's linear values become the model's [0, 1] (op4ksr.video.exr)."""
    kind = frame_kind(path)
    data = path.read_bytes()
    if kind == "exr":
        try:
            samples, source = exr.read_exr(data, str(path), exr_transfer)
        except exr.ExrError as err:
            raise FrameFileError(str(err)) from err
        rgb = torch.from_numpy(samples).permute(2, 0, 1).contiguous()
        return Frame(rgb, 16 if source.pixel_type == "half" else 32, kind, exr_source=source)
    if kind == "dpx":
        decoded = dpx.read_dpx(data, str(path))
        scale = float((1 << decoded.bit_depth) - 1)
        rgb = torch.from_numpy(decoded.samples.astype(np.float32) / scale).permute(2, 0, 1).contiguous()
        header = dpx.DpxFrame(np.empty((0, 0, 3), np.uint16), decoded.bit_depth, decoded.big_endian,
                              decoded.transfer, decoded.colorimetric, decoded.creator)
        return Frame(rgb, decoded.bit_depth, kind, dpx_header=header)
    try:
        image = decode_image(data)
    except ImageDecodeError as err:
        raise FrameFileError(f"{path}: {err}") from err
    return Frame(image.rgb, image.bit_depth, kind, image=image)


def encode_frame(rgb: torch.Tensor, source: Frame, provenance: dict | None = None) -> bytes:
    """`rgb` (3, H, W) in [0, 1] encoded like `source`: same format, bit depth and metadata, with
    `provenance` (version, model id) where the format has room: PNG/TIFF as op4ksr upscale writes
    it, DPX in the creator field (100 bytes), EXR as op4ksr_* string attributes."""
    if source.kind == "exr":
        return exr.write_exr(rgb.detach().float().clamp(0, 1).permute(1, 2, 0).numpy(), source.exr_source, provenance)
    if source.kind == "dpx":
        header = source.dpx_header
        top = (1 << header.bit_depth) - 1
        samples = (rgb.detach().float().clamp(0, 1).permute(1, 2, 0).numpy() * top + 0.5).astype(np.uint32)
        creator = " ".join(f"{k}={v}" for k, v in sorted((provenance or {}).items()))
        return dpx.write_dpx(samples, header.bit_depth, big_endian=header.big_endian, transfer=header.transfer,
                             colorimetric=header.colorimetric, creator=f"op4ksr {creator}".strip())
    return encode_image(rgb, source.image, source.kind, provenance=provenance)


def frame_geometry(path: Path) -> tuple[int, int, int]:
    """(width, height, bit depth) from a frame file's header alone (no pixel decode)."""
    kind = frame_kind(path)
    with open(path, "rb") as f:
        head = f.read(exr.HEADER_BYTES if kind == "exr" else dpx.HEADER_BYTES)
    if kind == "exr":
        try:
            return exr.header_geometry(head, str(path))
        except exr.ExrError as err:
            raise FrameFileError(str(err)) from err
        except (struct.error, ValueError) as err:  # a header cut short or garbled
            raise FrameFileError(f"{path}: not a readable OpenEXR header ({err})") from err
    if kind == "dpx":
        if len(head) < dpx.MIN_HEADER_BYTES or head[:4] not in (dpx.MAGIC_BIG, dpx.MAGIC_LITTLE):
            raise FrameFileError(f"{path}: not a DPX file (no SDPX header)")
        end = ">" if head[:4] == dpx.MAGIC_BIG else "<"
        width, height = struct.unpack_from(end + "II", head, 772)
        return width, height, head[803]
    if kind == "png":
        ihdr = png16.header(head)
        if ihdr is None:
            raise FrameFileError(f"{path}: not a PNG file")
        return ihdr[0], ihdr[1], ihdr[2]
    from PIL import Image

    try:
        with Image.open(path) as img:
            bits = img.tag_v2.get(258, (8,))
            return img.size[0], img.size[1], int(bits[0])
    except Exception as err:  # noqa: BLE001 - any reason a header cannot be read is one line
        raise FrameFileError(f"{path}: not a readable TIFF ({err})") from err


def check_uniform(sequence: FrameSequence) -> tuple[int, int, int]:
    """The sequence's (width, height, bit depth); SequenceError naming the first frames that differ."""
    first = sequence.frames[0]
    expected = frame_geometry(first.path)
    for frame in sequence.frames[1:]:
        found = frame_geometry(frame.path)
        if found != expected:
            what = "sizes" if found[:2] != expected[:2] else "bit depths"
            raise SequenceError(f"sequence {sequence.label} in {sequence.directory}: mixed {what}: frame "
                                f"{first.number} is {_geometry(expected)}, frame {frame.number} is "
                                f"{_geometry(found)}; split the sequence or conform it")
    return expected


def _geometry(g: tuple[int, int, int]) -> str:
    return f"{g[0]}x{g[1]} {g[2]}-bit"


def write_frame(path: Path, rgb: torch.Tensor, source: Frame, provenance: dict | None = None) -> None:
    """Write `rgb` like `source` to `path` atomically (a `.part` file renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(encode_frame(rgb, source, provenance))
    tmp.replace(path)
