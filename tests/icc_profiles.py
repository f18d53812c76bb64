"""Tiny ICC v2 RGB display profiles built here (matrix + tone curves), so colour tests need no files.

Pillow's ImageCms.createProfile makes only sRGB, LAB and XYZ; archives hold Adobe RGB and
Display P3 images, so these write the two real colorant matrices (D50-adapted, as ICC wants)
with their tone curves. LittleCMS reads them like the profiles cameras and editors embed.
"""
from __future__ import annotations

import struct

D50 = (0.9642, 1.0, 0.8249)
ADOBE_RGB = {"name": "Adobe RGB (1998)-like, op4ksr test", "gamma": 563 / 256,
             "colorants": ((0.60974, 0.31111, 0.01947), (0.20528, 0.62567, 0.06087), (0.14919, 0.06322, 0.74457))}
DISPLAY_P3 = {"name": "Display P3-like, op4ksr test", "gamma": None,  # None: the sRGB piecewise curve
              "colorants": ((0.51510, 0.24118, -0.00105), (0.29198, 0.69224, 0.04189), (0.15715, 0.06658, 0.78438))}


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def _curve(gamma: float | None) -> bytes:
    if gamma is not None:
        return b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    # parametric type 3: Y = (aX + b)^g for X >= d, else cX (sRGB's curve)
    params = (2.4, 1 / 1.055, 0.055 / 1.055, 1 / 12.92, 0.04045)
    return b"para\0\0\0\0" + struct.pack(">HH", 3, 0) + b"".join(_s15(p) for p in params)


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    return (b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)


def rgb_profile(spec: dict) -> bytes:
    """ICC profile bytes for a `spec` such as ADOBE_RGB or DISPLAY_P3."""
    (r, g, b), trc = spec["colorants"], _curve(spec["gamma"])
    tags = [(b"desc", _description(spec["name"])), (b"wtpt", _xyz(*D50)), (b"rXYZ", _xyz(*r)),
            (b"gXYZ", _xyz(*g)), (b"bXYZ", _xyz(*b)), (b"rTRC", trc), (b"gTRC", trc), (b"bTRC", trc),
            (b"cprt", b"text\0\0\0\0" + b"public domain\0")]
    offset = 128 + 4 + 12 * len(tags)
    table, body = [], b""
    for signature, data in tags:
        data += b"\0" * (-len(data) % 4)  # tags start on 4-byte boundaries
        table.append(signature + struct.pack(">II", offset + len(body), len(data)))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"lcms" + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4 + b"\0" * 8
              + b"\0" * 8 + struct.pack(">I", 0) + b"".join(_s15(v) for v in D50) + b"\0" * 4 + b"\0" * 16)
    header += b"\0" * (128 - len(header))
    return header + struct.pack(">I", len(tags)) + b"".join(table) + body
