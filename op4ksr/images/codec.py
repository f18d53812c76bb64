"""Image files <-> tensors, keeping what an archive cares about (orientation, colour, alpha, metadata).

Policy (docs/RELIABILITY.md): EXIF orientation is applied on decode; pixels are processed in the
file's own colour space and its ICC profile is re-embedded unchanged, so colour is preserved
without a lossy round trip through sRGB; CMYK is converted to RGB (Pillow's conversion, the
CMYK profile dropped); alpha is upscaled separately and the colour premultiplied around the
model; grayscale stays grayscale; 16-bit input is decoded at full precision (gray through
Pillow, colour PNG through op4ksr.images.png16, colour TIFF through tifffile) and written at 16 bits
as PNG or TIFF; multi-frame files (GIF, APNG, TIFF pages) use their first frame and say so in
the output's provenance; EXIF and XMP are copied and provenance (version, model id, params
hash) is written into the output's metadata.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

from op4ksr.images import png16
from op4ksr.images.formats import EXTENSIONS, FORMATS  # noqa: F401 - importable from here as before
SIXTEEN_BIT_GRAY_MODES = ("I;16", "I;16B", "I;16L", "I")
ORIENTATION, SOFTWARE, DESCRIPTION, XMP_TAG = 0x0112, 0x0131, 0x010E, 700  # EXIF/TIFF tags


class ImageDecodeError(ValueError):
    """The bytes are not an image we can process; the message says why in plain words."""


class ImageTooLargeError(ImageDecodeError):
    """The image's declared size is over the configured limit (or a decompression bomb)."""


@dataclass
class DecodedImage:
    rgb: torch.Tensor  # (3, h, w) float32 in [0, 1], colour premultiplied by alpha when there is alpha
    alpha: torch.Tensor | None  # (1, h, w) float32 in [0, 1]
    grayscale: bool
    bit_depth: int  # 8 or 16
    source_format: str
    icc_profile: bytes | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    info: dict = field(default_factory=dict)  # notes for the output's provenance, e.g. {"source_frames": 3}
    source_sha256: str | None = None  # of the encoded bytes decoded: the output's lineage names it
    source_bytes: bytes | None = field(default=None, repr=False)  # kept only when a C2PA manifest will need them

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return tuple(self.rgb.shape[-2:])


def _check_declared_size(img: Image.Image, max_pixels: int) -> None:
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageTooLargeError(f"image declares {w}x{h} = {w * h / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:.1f} MP")


def decode_image(data: bytes, *, max_pixels: int = 100_000_000) -> DecodedImage:
    """A DecodedImage from encoded bytes; ImageDecodeError with a plain reason if it cannot be."""
    if not data:
        raise ImageDecodeError("file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # our own limit (max_pixels) decides below; Pillow's hard limit (2x its warning) still applies
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        _check_declared_size(img, max_pixels)
        frames = getattr(img, "n_frames", 1)
        img.load()  # policy: multi-frame files (GIF, APNG, TIFF pages) use their first frame
        decoded = _to_decoded(img, data)
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as err:
        pixels = re.search(r"\((\d+) pixels\)", str(err))
        declared = f"{int(pixels.group(1)) / 1e6:.1f} MP" if pixels else "a size"
        raise ImageTooLargeError(f"image declares {declared}, over the limit of {max_pixels / 1e6:.1f} MP "
                                 "(a decompression bomb)") from err
    except Image.UnidentifiedImageError as err:
        head = data[:64].lstrip().lower()
        kind = "an HTML/text page" if head.startswith((b"<", b"{")) else "not a recognised image"
        raise ImageDecodeError(f"{kind} ({len(data)} bytes)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from err
    if frames > 1:
        decoded.info.update(source_frames=frames, frame_used=0)
    decoded.source_sha256 = hashlib.sha256(data).hexdigest()
    return decoded


def _to_decoded(img: Image.Image, data: bytes) -> DecodedImage:
    source_format = img.format or "unknown"
    icc, exif = img.info.get("icc_profile"), img.info.get("exif")
    xmp = img.info.get("xmp")
    xmp = xmp.encode() if isinstance(xmp, str) else xmp
    deep = _deep_colour_samples(img, data)
    if deep is not None:  # (h, w, c) uint16, c = 2 gray+alpha, 3 RGB, 4 RGBA
        samples, premultiplied = deep
        samples = orient(samples, _orientation(img)).astype(np.float32) / 65535.0
        return _from_samples(samples, 16, source_format, icc, exif, xmp, premultiplied)
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode == "CMYK":
        img, icc = img.convert("RGB"), None  # the CMYK profile no longer describes the pixels
    elif mode in ("P", "PA"):
        img = img.convert("RGBA" if mode == "PA" or "transparency" in img.info else "RGB")
    elif mode in ("1", "La", "RGBa", "RGBX", "YCbCr"):
        img = img.convert({"1": "L", "La": "LA", "RGBa": "RGBA"}.get(mode, "RGB"))
    elif mode not in ("L", "LA", "RGB", "RGBA", "F", *SIXTEEN_BIT_GRAY_MODES):
        raise ImageDecodeError(f"{source_format} image in mode {mode} is not supported: convert it to RGB")
    if img.mode in SIXTEEN_BIT_GRAY_MODES:
        samples, depth = np.clip(np.asarray(img, dtype=np.float32), 0, 65535)[..., None] / 65535.0, 16
    elif img.mode == "F":
        samples, depth = np.clip(np.asarray(img, dtype=np.float32), 0, 1)[..., None], 16
    else:
        samples, depth = np.asarray(img, dtype=np.float32) / 255.0, 8
    return _from_samples(samples if samples.ndim == 3 else samples[..., None], depth, source_format, icc, exif, xmp)


def _from_samples(samples: np.ndarray, depth: int, source_format: str, icc, exif, xmp,
                  premultiplied: bool = False) -> DecodedImage:
    """samples (h, w, c) float32 in [0, 1], c = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA."""
    channels = samples.shape[-1]
    grayscale = channels in (1, 2)
    x = torch.from_numpy(np.ascontiguousarray(samples)).permute(2, 0, 1)  # (c, h, w)
    colour, alpha = (x[:-1], x[-1:].contiguous()) if channels in (2, 4) else (x, None)
    rgb = colour.expand(3, -1, -1).contiguous() if grayscale else colour.contiguous()
    if alpha is not None and not premultiplied:
        rgb = rgb * alpha
    return DecodedImage(rgb, alpha, grayscale, depth, source_format, icc, exif, xmp)


def _deep_colour_samples(img: Image.Image, data: bytes) -> tuple[np.ndarray, bool] | None:
    """(uint16 samples, premultiplied) for 16-bit colour or gray+alpha PNG/TIFF, which Pillow cuts to 8 bits."""
    if img.format == "PNG" and png16.is_deep_colour(data):
        return png16.read_pixels(data), False
    if img.format != "TIFF" or img.mode in SIXTEEN_BIT_GRAY_MODES:
        return None
    tags = getattr(img, "tag_v2", {})
    bits, photometric = tags.get(258, (8,)), tags.get(262)
    if not all(b == 16 for b in bits) or len(bits) < 2 or photometric not in (1, 2):
        return None
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages[0]
            samples = page.asarray()
            if page.planarconfig == 2 and samples.ndim == 3:
                samples = np.moveaxis(samples, 0, -1)  # (c, h, w) planes -> (h, w, c)
            extra = tuple(np.atleast_1d(page.extrasamples))
    except Exception:  # noqa: BLE001 - e.g. a compression tifffile needs imagecodecs for: Pillow's 8 bits
        return None
    channels = 3 if photometric == 2 else 1
    if samples.ndim != 3 or samples.shape[-1] < channels or samples.dtype != np.uint16:
        return None
    has_alpha = samples.shape[-1] > channels and extra[:1] in ((1,), (2,))
    samples = samples[..., :channels + has_alpha]
    return samples, has_alpha and extra[0] == 1  # ExtraSamples 1: associated (premultiplied) alpha


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - an unreadable EXIF block means no rotation, as for Pillow
        return 1


def orient(samples: np.ndarray, orientation: int) -> np.ndarray:
    """(h, w, ...) samples turned upright for an EXIF orientation 1-8 (as ImageOps.exif_transpose does)."""
    turns = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
             5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
             8: lambda a: np.rot90(a, 1)}
    return np.ascontiguousarray(turns.get(orientation, lambda a: a)(samples))


def finish_output(rgb: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """Model output (3, H, W) back to straight (un-premultiplied) colour where there is alpha."""
    if alpha is None:
        return rgb
    return torch.where(alpha > 1e-4, rgb / alpha.clamp_min(1e-4), torch.zeros_like(rgb)).clamp(0, 1)


def encode_image(
    rgb: torch.Tensor,
    source: DecodedImage,
    fmt: str = "png",
    *,
    alpha: torch.Tensor | None = None,
    quality: int = 95,
    png_compress_level: int = 1,
    provenance: dict | None = None,
    xmp: bytes | None = None,
) -> bytes:
    """Encoded bytes of an output image (3, H, W) in [0, 1], with the source's colour, mode and metadata;
    `xmp`: the output's XMP packet (op4ksr.provenance.xmp.merged_xmp), by default the source's."""
    if fmt not in FORMATS:
        raise ValueError(f"output format {fmt!r} is not one of {', '.join(FORMATS)}")
    xmp = source.xmp if xmp is None else xmp
    provenance = {**(provenance or {}), **source.info}
    description = json.dumps(provenance, sort_keys=True)
    software = f"op4ksr {provenance.get('version', '')}".strip()
    exif = Image.Exif()
    if source.exif:
        exif.load(source.exif)
    exif[ORIENTATION] = 1  # orientation is already applied to the pixels
    exif[SOFTWARE], exif[DESCRIPTION] = software, description  # provenance as JSON in ImageDescription
    if source.bit_depth == 16 and fmt in ("png", "tiff"):
        samples = _samples16(rgb, alpha, source.grayscale)
        if fmt == "png":
            return png16.write_png(samples, icc_profile=source.icc_profile, exif=exif.tobytes(), xmp=xmp,
                                   text={"op4ksr": description}, compress_level=png_compress_level)
        return _write_tiff16(samples, source, description, software, xmp)
    img = _to_pil(rgb, alpha, source, fmt)
    options: dict = {"exif": exif.tobytes()}
    if source.icc_profile:
        options["icc_profile"] = source.icc_profile
    if fmt == "png":
        text = PngImagePlugin.PngInfo()
        text.add_text("op4ksr", description)
        if xmp:
            text.add_itxt("XML:com.adobe.xmp", xmp.decode("utf-8", "replace"))
        options.update(pnginfo=text, compress_level=png_compress_level)
    elif fmt in ("jpeg", "webp"):
        options.update(quality=quality, **({"xmp": xmp} if xmp else {}))
    elif fmt == "tiff":
        if xmp:
            exif[XMP_TAG] = xmp  # a TIFF's EXIF is its first IFD, where XMP lives too
        options.update(compression="tiff_deflate", exif=exif)
    out = io.BytesIO()
    img.save(out, format=FORMATS[fmt], **options)
    return out.getvalue()


def _samples16(rgb: torch.Tensor, alpha: torch.Tensor | None, grayscale: bool) -> np.ndarray:
    """(H, W, c) uint16: gray, gray+alpha, RGB or RGBA."""
    rgb = rgb.detach().float().cpu().clamp(0, 1)
    planes = [rgb.mean(0, keepdim=True) if grayscale else rgb]
    if alpha is not None:
        planes.append(alpha.detach().float().cpu().clamp(0, 1))
    return (torch.cat(planes).permute(1, 2, 0).numpy() * 65535 + 0.5).astype(np.uint16)


def _write_tiff16(samples: np.ndarray, source: DecodedImage, description: str, software: str,
                  xmp: bytes | None) -> bytes:
    """A deflate TIFF of 16-bit samples with the ICC profile, XMP and provenance (other EXIF tags are not kept)."""
    import tifffile

    out = io.BytesIO()
    colour = samples.shape[-1] >= 3
    tifffile.imwrite(out, samples if samples.shape[-1] > 1 else samples[..., 0],
                     photometric="rgb" if colour else "minisblack",
                     extrasamples=("unassalpha",) if samples.shape[-1] in (2, 4) else None,
                     compression="zlib", iccprofile=source.icc_profile, description=description,
                     software=software, metadata=None,
                     extratags=[(XMP_TAG, 1, len(xmp), xmp, True)] if xmp else ())
    return out.getvalue()


def _to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None, source: DecodedImage, fmt: str) -> Image.Image:
    rgb = rgb.detach().float().cpu().clamp(0, 1)
    keep_alpha = alpha is not None and fmt != "jpeg"
    if source.grayscale:
        img = Image.fromarray((rgb.mean(0).numpy() * 255 + 0.5).astype(np.uint8), "L")
    else:
        img = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), "RGB")
    if keep_alpha:
        a = Image.fromarray((alpha.detach().float().cpu().clamp(0, 1)[0].numpy() * 255 + 0.5).astype(np.uint8), "L")
        img = img.convert("LA" if source.grayscale and fmt != "webp" else "RGBA")
        img.putalpha(a)
    return img
