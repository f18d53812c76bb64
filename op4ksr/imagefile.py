"""Image files <-> tensors, keeping what an archive cares about (orientation, colour, alpha, metadata).

Policy (docs/RELIABILITY.md): EXIF orientation is applied on decode; pixels are processed in the
file's own colour space and its ICC profile is re-embedded, so colour is preserved without a
lossy round trip through sRGB; CMYK is converted to RGB; alpha is upscaled separately and the
colour premultiplied around the model; grayscale stays grayscale; 16-bit input is decoded at
full precision and written at 16 bits where the format allows (PNG gray, TIFF); EXIF is copied
and provenance (version, model id, params hash) is written into the output's metadata.
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin

FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP", "tiff": "TIFF"}
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif"}
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "RGB;16", "RGBA;16")


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
    info: dict = field(default_factory=dict)

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
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            _check_declared_size(img, max_pixels)
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # policy: multi-frame files (GIF, APNG, TIFF pages) use their first frame
            img.load()
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageTooLargeError(f"decompression bomb refused: {err}") from err
    except Image.UnidentifiedImageError as err:
        head = data[:64].lstrip().lower()
        kind = "an HTML/text page" if head.startswith((b"<", b"{")) else "not a recognised image"
        raise ImageDecodeError(f"{kind} ({len(data)} bytes)") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise ImageDecodeError(f"corrupt or truncated image: {err}") from err
    return _to_decoded(img)


def _to_decoded(img: Image.Image) -> DecodedImage:
    source_format = img.format or "unknown"
    icc, exif = img.info.get("icc_profile"), img.info.get("exif")
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    bit_depth = 16 if mode in SIXTEEN_BIT_MODES else 8
    if mode == "CMYK":
        img, icc = img.convert("RGB"), None  # the CMYK profile no longer describes the pixels
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode in ("LA", "PA"):
        img = img.convert("LA")
    grayscale = img.mode in ("L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F")
    alpha = None
    if img.mode in ("RGBA", "LA", "RGBa", "La"):
        alpha = torch.from_numpy(np.asarray(img.getchannel("A"), dtype=np.float32) / 255.0)[None]
        img = img.convert("L" if grayscale else "RGB")
    if grayscale:
        arr = np.asarray(img)
        scale = 65535.0 if bit_depth == 16 else (1.0 if arr.dtype == np.float32 else 255.0)
        gray = torch.from_numpy(arr.astype(np.float32) / scale).clamp(0, 1)[None]
        rgb = gray.expand(3, -1, -1).contiguous()
    else:
        rgb = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
    if alpha is not None:
        rgb = rgb * alpha
    return DecodedImage(rgb, alpha, grayscale, bit_depth, source_format, icc, exif)


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
) -> bytes:
    """Encoded bytes of an output image (3, H, W) in [0, 1], with the source's colour, mode and metadata."""
    if fmt not in FORMATS:
        raise ValueError(f"output format {fmt!r} is not one of {', '.join(FORMATS)}")
    img = _to_pil(rgb, alpha, source, fmt)
    options: dict = {}
    if source.icc_profile:
        options["icc_profile"] = source.icc_profile
    description = json.dumps(provenance or {}, sort_keys=True)
    exif = Image.Exif()
    if source.exif:
        exif.load(source.exif)
    exif[0x0112] = 1  # orientation is already applied to the pixels
    exif[0x0131] = f"op4ksr {(provenance or {}).get('version', '')}".strip()  # Software
    exif[0x010E] = description  # ImageDescription: provenance as JSON
    options["exif"] = exif.tobytes()
    if fmt == "png":
        text = PngImagePlugin.PngInfo()
        text.add_text("op4ksr", description)
        options.update(pnginfo=text, compress_level=png_compress_level)
    elif fmt in ("jpeg", "webp"):
        options["quality"] = quality
    elif fmt == "tiff":
        options["compression"] = "tiff_deflate"
    out = io.BytesIO()
    img.save(out, format=FORMATS[fmt], **options)
    return out.getvalue()


def _to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None, source: DecodedImage, fmt: str) -> Image.Image:
    rgb = rgb.detach().float().cpu().clamp(0, 1)
    keep_alpha = alpha is not None and fmt != "jpeg"
    sixteen = source.bit_depth == 16 and source.grayscale and fmt in ("png", "tiff") and not keep_alpha
    if source.grayscale:
        gray = rgb.mean(0)
        if sixteen:
            return Image.fromarray((gray.numpy() * 65535 + 0.5).astype(np.uint16))
        img = Image.fromarray((gray.numpy() * 255 + 0.5).astype(np.uint8), "L")
    else:
        img = Image.fromarray((rgb.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8), "RGB")
    if keep_alpha:
        a = Image.fromarray((alpha.detach().float().cpu().clamp(0, 1)[0].numpy() * 255 + 0.5).astype(np.uint8), "L")
        img = img.convert("LA" if source.grayscale and fmt != "webp" else "RGBA")
        img.putalpha(a)
    return img
