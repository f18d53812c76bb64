"""PNG pixels at full precision with numpy + zlib: Pillow keeps only 8 bits of 16-bit colour PNGs.

`read_pixels` decodes a non-interlaced PNG of bit depth 8 or 16 and colour type gray, RGB,
gray+alpha or RGBA to an (h, w, c) array; `write_png` writes such an array (uint8 or uint16)
with metadata chunks. Metadata (ICC, EXIF, XMP, text) is read with Pillow by the caller.
"""
from __future__ import annotations

import struct
import zlib

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
COLOUR_TYPE = {c: t for t, c in CHANNELS.items()}


class PngError(ValueError):
    """The PNG is corrupt, truncated or of a kind this reader does not take."""


def header(data: bytes) -> tuple[int, int, int, int, int] | None:
    """(width, height, bit_depth, colour_type, interlace) from a PNG's IHDR, or None if not a PNG."""
    if len(data) < 33 or not data.startswith(SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", data[16:29])
    return width, height, depth, colour, interlace


def is_deep_colour(data: bytes) -> bool:
    """True for a 16-bit PNG with colour or alpha, the kind Pillow would cut to 8 bits."""
    head = header(data)
    return head is not None and head[2] == 16 and head[3] in (2, 4, 6) and head[4] == 0


def read_pixels(data: bytes) -> np.ndarray:
    """(h, w, c) uint8 or uint16 samples of a non-interlaced 8/16-bit PNG; PngError if it cannot be read."""
    head = header(data)
    if head is None:
        raise PngError("not a PNG")
    width, height, depth, colour, interlace = head
    if depth not in (8, 16) or colour not in CHANNELS or interlace:
        raise PngError(f"PNG of depth {depth}, colour type {colour}, interlace {interlace} is not read here")
    idat, pos = [], 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat.append(data[pos + 8:pos + 8 + length])
        elif kind == b"IEND":
            break
        pos += 12 + length
    bpp = CHANNELS[colour] * depth // 8  # bytes per pixel
    stride = width * bpp
    try:
        raw = zlib.decompressobj().decompress(b"".join(idat), height * (stride + 1))
    except zlib.error as err:
        raise PngError(f"corrupt PNG pixel data: {err}") from err
    if len(raw) < height * (stride + 1):
        raise PngError(f"PNG pixel data is truncated ({len(raw)} of {height * (stride + 1)} bytes)")
    rows = np.frombuffer(raw, np.uint8, height * (stride + 1)).reshape(height, stride + 1)
    if rows[:, 0].max(initial=0) > 4:
        raise PngError(f"corrupt PNG: unknown row filter {rows[:, 0].max()}")
    samples = unfilter(rows[:, 0], rows[:, 1:].reshape(height, width, bpp))
    if depth == 16:
        samples = samples.reshape(height, width * bpp).view(">u2").astype(np.uint16)
    return samples.reshape(height, width, CHANNELS[colour])


def unfilter(types: np.ndarray, filtered: np.ndarray) -> np.ndarray:
    """(h, w, bpp) reconstructed bytes from filtered bytes and each row's filter type (PNG spec §9)."""
    h, w, bpp = filtered.shape
    if set(np.unique(types).tolist()) <= {0, 1, 2}:  # no Average/Paeth: one vector step per row
        out = np.zeros((h + 1, w, bpp), np.uint8)  # uint8 arithmetic wraps modulo 256, as PNG's does
        for y in range(h):
            row = filtered[y]
            if types[y] == 1:
                row = np.cumsum(row, axis=0, dtype=np.uint8)
            elif types[y] == 2:
                row = row + out[y]
            out[y + 1] = row
        return out[1:]
    out = np.zeros((h + 1, w + 1, bpp), np.int16)  # a zero row above and a zero column to the left
    # Average and Paeth need the reconstructed left, up and up-left neighbours: all pixels on one
    # anti-diagonal y + x = d depend only on earlier diagonals, so each diagonal is one vector step.
    kinds = types.astype(np.int16)
    for d in range(h + w - 1):
        ys = np.arange(max(0, d - w + 1), min(h, d + 1))
        xs = d - ys
        a, b, c = out[ys + 1, xs], out[ys, xs + 1], out[ys, xs]
        p = a + b - c
        pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        t = kinds[ys][:, None]
        predictor = np.select([t == 1, t == 2, t == 3, t == 4], [a, b, (a + b) >> 1, paeth], 0)
        out[ys + 1, xs + 1] = (filtered[ys, xs] + predictor) & 0xFF
    return out[1:, 1:].astype(np.uint8)


def chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png(
    samples: np.ndarray,
    *,
    icc_profile: bytes | None = None,
    exif: bytes | None = None,
    xmp: bytes | None = None,
    text: dict[str, str] | None = None,
    compress_level: int = 1,
) -> bytes:
    """A PNG of (h, w, c) uint8/uint16 samples (c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) with metadata."""
    if samples.ndim == 2:
        samples = samples[..., None]
    h, w, c = samples.shape
    if samples.dtype not in (np.uint8, np.uint16) or c not in COLOUR_TYPE:
        raise ValueError(f"samples of shape {samples.shape} and dtype {samples.dtype} cannot be a PNG")
    depth = samples.dtype.itemsize * 8
    pixels = np.ascontiguousarray(samples, ">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, w, -1).astype(np.int16)
    sub = pixels.copy()
    sub[:, 1:] -= pixels[:, :-1]  # filter type 1 (Sub) on every row: cheap and good on smooth images
    rows = np.concatenate([np.ones((h, 1), np.uint8), (sub & 0xFF).astype(np.uint8).reshape(h, -1)], axis=1)
    parts = [SIGNATURE, chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, COLOUR_TYPE[c], 0, 0, 0))]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile)))
    if exif:
        parts.append(chunk(b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif))
    if xmp:
        parts.append(chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + xmp))
    for key, value in (text or {}).items():
        parts.append(chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + value.encode("utf-8")))
    parts += [chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)), chunk(b"IEND", b"")]
    return b"".join(parts)
