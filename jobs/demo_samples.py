"""The demo: sample images into the embedded S3 server, a real backfill, results copied out."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def sample_images() -> dict[str, bytes]:
    """Encoded sample images (several sizes, aspect ratios and modes) from scikit-image's bundled photos."""
    from op4ksr.extras import require

    data = require("skimage.data", "demo", "the demo's sample images")

    def encode(array: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
        out = io.BytesIO()
        Image.fromarray(array, mode).save(out, format=fmt)
        return out.getvalue()

    def shrink(array: np.ndarray, factor: int) -> np.ndarray:
        img = Image.fromarray(array)
        return np.asarray(img.resize((img.width // factor, img.height // factor), Image.Resampling.LANCZOS))

    rgba = np.dstack([shrink(data.chelsea(), 4), np.linspace(0, 255, 75 * 112, dtype=np.uint8).reshape(75, 112)])
    return {
        "photos/astronaut.png": encode(shrink(data.astronaut(), 4), "PNG"),           # 128x128 square
        "photos/coffee.jpg": encode(shrink(data.coffee(), 4), "JPEG"),                # 150x100 landscape
        "photos/rocket-portrait.jpg": encode(shrink(data.rocket(), 4), "JPEG"),       # 160x106 landscape
        "scans/camera-gray.png": encode(shrink(data.camera(), 4), "PNG"),             # 128x128 grayscale
        "scans/chelsea-alpha.png": encode(rgba, "PNG", "RGBA"),                       # alpha channel
        "scans/tall.png": encode(shrink(data.astronaut(), 2)[:, 64:128].copy(), "PNG"),  # 64x256 portrait
    }


def upload_samples(storage) -> int:
    """Put the sample images under the storage; returns how many."""
    images = sample_images()
    for key, data in images.items():
        storage.put(key, data)
    return len(images)


def copy_tree(storage, prefix: str, target: Path) -> int:
    """Copy every object under `prefix` of the storage into the local folder `target`; returns the count."""
    count = 0
    for obj in storage.iter_objects():
        if obj.key.startswith(prefix):
            path = target / obj.key
            path.parent.mkdir(parents=True, exist_ok=True)
            storage.get_file(obj.key, str(path))
            count += 1
    return count
