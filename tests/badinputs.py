"""The bad-input corpus, generated here (nothing downloaded): each case is bytes plus what must happen.

`corpus()` gives every case a pipeline run must turn into exactly one `failed` row (with the
error class and a message a person understands) while the rest of the run goes on.
`multi_frame()` gives the files whose policy is "first frame" (docs/RELIABILITY.md).
"""
from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

HTML_ERROR_PAGE = (b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
                   b"<body><h1>Service Unavailable</h1><p>Please try again later.</p></body></html>\n")


@dataclass(frozen=True)
class BadInput:
    key: str  # relative input key, with the extension a catalog would give it
    data: bytes
    error_class: str  # the manifest's error_class
    message: str  # a regex the manifest's error must match


def noise(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """(h, w, channels) uint8 noise: incompressible, so a cut file is cut inside the pixel data."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, channels) if channels > 1 else (h, w), dtype=np.uint8)


def encode(array: np.ndarray, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, fmt, **options)
    return out.getvalue()


def write_noise_pngs(folder, n: int, size: int = 16) -> None:
    """`folder`/img-00.png ... : n small, valid noise PNGs (seeds 0..n-1), a catalog for run tests."""
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"img-{i:02d}.png").write_bytes(encode(noise(size, size, seed=i), "PNG"))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 60-byte PNG whose header declares width x height RGB pixels (a decompression bomb's signature)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)  # a real bomb would inflate to w*h*3 bytes; the header is what we refuse
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def flat(h: int, w: int, colour=(40, 120, 200)) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def corpus() -> list[BadInput]:
    """Every bad input of issue 5 §1, each with its expected failure."""
    jpeg, png = encode(noise(48, 64, 1), "JPEG", quality=90), encode(noise(48, 64, 2), "PNG")
    return [
        BadInput("bad/zero-byte.jpg", b"", "ImageDecodeError", r"file is empty \(0 bytes\)"),
        BadInput("bad/truncated-jpeg.jpg", jpeg[: len(jpeg) // 2], "ImageDecodeError", r"corrupt or truncated image"),
        BadInput("bad/truncated.png", png[: len(png) // 2], "ImageDecodeError", r"corrupt or truncated image"),
        BadInput("bad/error-page.jpg", HTML_ERROR_PAGE, "ImageDecodeError", r"an HTML/text page \(\d+ bytes\)"),
        BadInput("bad/bomb.png", png_bomb(), "ImageTooLargeError", r"declares 10000\.0 MP, over the limit of 100\.0 MP \(a decompression bomb\)"),
        BadInput("bad/tiny-4x4.png", encode(noise(4, 4, 3), "PNG"), "OutputSizeError",
                 r"output 16x16 has a side under the minimum of 32 px"),
        BadInput("bad/too-thin-4000x4.png", encode(flat(4, 4000), "PNG"), "OutputSizeError",
                 r"output 16000x16 has a side under the minimum of 32 px"),
    ]


def over_limit_input() -> BadInput:
    """An input whose 4x output is over a run with sr.max_output_megapixels=3."""
    return BadInput("bad/big-output.png", encode(flat(512, 512), "PNG"), "OutputSizeError",
                    r"output 2048x2048 = 4\.2 MP is over sr\.max_output_megapixels=3")


HOSTILE_KEYS = {  # S3 lists these verbatim; none may name an output
    "../escape.png": r"'\.\./escape\.png' has a '\.\.' segment that would leave the prefix",
    "/leading-slash.png": r"'/leading-slash\.png' starts with '/'",
    "deep/../../up-two.png": r"has a '\.\.' segment that would leave the prefix",
}


FRAME_COLOURS = ((200, 30, 30), (30, 200, 30), (30, 30, 200))  # frame 0 is red


def multi_frame() -> dict[str, bytes]:
    """Animated GIF, APNG and a 3-page TIFF whose first frame is flat red and later ones are not."""
    frames = [Image.fromarray(flat(24, 32, c)) for c in FRAME_COLOURS]
    files = {}
    for name, fmt, options in (("animated.gif", "GIF", {"duration": 100, "loop": 0}),
                               ("apng.png", "PNG", {"duration": 100}),
                               ("pages.tif", "TIFF", {})):
        out = io.BytesIO()
        frames[0].save(out, fmt, save_all=True, append_images=frames[1:], **options)
        files[name] = out.getvalue()
    return files
