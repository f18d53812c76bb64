"""DPX (SMPTE 268M) frames <-> uint16 RGB samples: the cases film scanners write, read and written exactly.

Covered: one image element, RGB (descriptor 50), 8-, 10-, 12- or 16-bit, uncompressed, big- or
little-endian. 10-bit is packed three samples to a 32-bit word, "filled to method A" (packing 1:
R in bits 22-31, G in 12-21, B in 2-11), the layout nearly every scanner writes; 12-bit is one sample
per 16-bit word, filled to method A (the sample in the top 12 bits). Anything else (YCbCr, several
elements, RLE, packing 0 at 10/12 bits) is refused in one line naming what the file has.
Samples keep their code values: a 10-bit frame reads as 0..1023, never rescaled, so a round trip
writes the same values back.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from op4ksr.video.errors import FrameFileError

MAGIC_BIG, MAGIC_LITTLE = b"SDPX", b"XPDS"
HEADER_BYTES = 2048  # generic (768) + image (640) + orientation (256) + film (256) + TV (128) headers
RGB_DESCRIPTOR = 50
MIN_HEADER_BYTES = 832  # through the first image element's fields: some writers stop at 1664 bytes
BIT_DEPTHS = (8, 10, 12, 16)


@dataclass(frozen=True)
class DpxFrame:
    samples: np.ndarray  # (h, w, 3) uint16 code values, 0 .. 2**bit_depth - 1
    bit_depth: int
    big_endian: bool
    transfer: int  # DPX transfer characteristic code (2 linear, 1 printing density, 6 BT.709 ...)
    colorimetric: int
    creator: str = ""


def read_dpx(data: bytes, name: str = "DPX") -> DpxFrame:
    """The RGB samples of a DPX file's bytes; FrameFileError (one line naming `name`) if they cannot be read."""
    if len(data) < MIN_HEADER_BYTES or data[:4] not in (MAGIC_BIG, MAGIC_LITTLE):
        raise FrameFileError(f"{name}: not a DPX file ({len(data)} bytes, no SDPX header)")
    end = ">" if data[:4] == MAGIC_BIG else "<"
    image_offset, = struct.unpack_from(end + "I", data, 4)
    elements, width, height = struct.unpack_from(end + "HII", data, 770)
    descriptor, transfer, colorimetric, bits, packing, encoding, element_offset = struct.unpack_from(
        end + "BBBBHHI", data, 800)
    if elements != 1 or descriptor != RGB_DESCRIPTOR or bits not in BIT_DEPTHS or encoding != 0:
        raise FrameFileError(f"{name}: DPX with {elements} element(s), descriptor {descriptor}, {bits}-bit, "
                             f"encoding {encoding} is not supported (one uncompressed RGB element, 8/10/12/16-bit)")
    if bits in (10, 12) and packing != 1:
        raise FrameFileError(f"{name}: {bits}-bit DPX packing {packing} is not supported (only method A, packing 1)")
    offset = element_offset or image_offset
    need = _data_bytes(width, height, bits)
    if width == 0 or height == 0 or len(data) < offset + need:
        raise FrameFileError(f"{name}: truncated DPX: {width}x{height} {bits}-bit needs {offset + need} bytes, "
                             f"the file has {len(data)}")
    raw = np.frombuffer(data, dtype=_word(end, bits), count=need // _word(end, bits).itemsize, offset=offset)
    samples = _unpack(raw.astype(np.uint32 if bits == 10 else np.uint16), bits, width, height)
    creator = data[160:260].split(b"\0", 1)[0].decode("ascii", "replace")
    return DpxFrame(samples, bits, end == ">", transfer, colorimetric, creator)


def write_dpx(samples: np.ndarray, bit_depth: int, *, big_endian: bool = True, transfer: int = 2,
              colorimetric: int = 2, creator: str = "") -> bytes:
    """A DPX file of (h, w, 3) integer code values at `bit_depth` (8/10/12/16); ValueError if a value is over
    range. `creator`: the generic header's creator field (100 bytes, ASCII), e.g. the provenance."""
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"DPX bit depth must be one of {BIT_DEPTHS}, got {bit_depth}")
    samples = np.asarray(samples)
    if samples.ndim != 3 or samples.shape[-1] != 3:
        raise ValueError(f"DPX samples must be (h, w, 3), got {samples.shape}")
    if samples.size and int(samples.max()) >= 1 << bit_depth or samples.min() < 0:
        raise ValueError(f"DPX samples must lie in 0..{(1 << bit_depth) - 1} at {bit_depth} bits")
    height, width = samples.shape[:2]
    end = ">" if big_endian else "<"
    body = _pack(samples.astype(np.uint32), bit_depth).astype(_word(end, bit_depth)).tobytes()
    header = bytearray(HEADER_BYTES)
    struct.pack_into(end + "4sI8sI", header, 0, b"SDPX" if big_endian else b"SDPX"[::-1], HEADER_BYTES,
                     b"V2.0", HEADER_BYTES + len(body))
    struct.pack_into(end + "IIII", header, 20, 1, 1664, 384, 0)  # ditto key (new), generic/industry/user sizes
    header[160:259] = creator.encode("ascii", "replace")[:99].ljust(99, b"\0")  # NUL-terminated
    struct.pack_into(end + "HHII", header, 768, 0, 1, width, height)  # orientation, elements, size
    struct.pack_into(end + "IIfIf", header, 780, 0, 0, 0.0, (1 << bit_depth) - 1, 2.047)  # sign, ref low/high
    struct.pack_into(end + "BBBBHHI", header, 800, RGB_DESCRIPTOR, transfer, colorimetric, bit_depth,
                     1 if bit_depth in (10, 12) else 0, 0, HEADER_BYTES)
    struct.pack_into(end + "I", header, 812, 0)  # end-of-line padding
    struct.pack_into(end + "I", header, 816, 0)  # end-of-image padding
    return bytes(header) + body


def _word(end: str, bits: int) -> np.dtype:
    return np.dtype({8: "u1", 10: "u4", 12: "u2", 16: "u2"}[bits]).newbyteorder(end)


def _data_bytes(width: int, height: int, bits: int) -> int:
    per_word = {8: 4, 10: 3, 12: 2, 16: 2}[bits]  # samples in one 32-bit word; a line ends on a word
    return -(-width * 3 // per_word) * 4 * height


def _unpack(words: np.ndarray, bits: int, width: int, height: int) -> np.ndarray:
    per_line = width * 3
    if bits == 10:
        lines = words.reshape(height, -1)  # (h, words per line), 3 samples a word
        fields = np.stack([(lines >> shift) & 0x3FF for shift in (22, 12, 2)], axis=-1).reshape(height, -1)
        return fields[:, :per_line].reshape(height, width, 3).astype(np.uint16)
    lines = words.reshape(height, -1)[:, :per_line]
    if bits == 12:
        lines = lines >> 4
    return lines.reshape(height, width, 3).astype(np.uint16)


def _pack(samples: np.ndarray, bits: int) -> np.ndarray:
    height = samples.shape[0]
    lines = samples.reshape(height, -1)  # (h, 3w)
    group = {8: 4, 10: 3, 12: 2, 16: 2}[bits]  # samples per 32-bit word: lines end on a word
    pad = (-lines.shape[1]) % group
    lines = np.pad(lines, ((0, 0), (0, pad)))
    if bits == 10:
        triples = lines.reshape(height, -1, 3)
        return (triples[..., 0] << 22) | (triples[..., 1] << 12) | (triples[..., 2] << 2)
    return lines << 4 if bits == 12 else lines
