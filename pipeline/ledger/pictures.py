"""Pictures on the self-contained pages: decode a stored image, encode a PNG, inline it as a data: URI."""
from __future__ import annotations

import base64
import io

from PIL import Image, ImageOps


def open_image(data: bytes) -> Image.Image:
    """A stored image, upright (EXIF orientation applied), in a mode a PNG keeps (RGB, RGBA, L, LA)."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    return image if image.mode in ("RGB", "RGBA", "L", "LA") else image.convert("RGB")


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
