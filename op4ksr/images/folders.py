"""Plain RGB uint8 tensors from arrays and image files, and the image files of a folder.

The lowest layer under training data (op4ksr.training.data) and benchmark building
(op4ksr.evaluation.benchset): both import it, neither imports the other. Unlike op4ksr.images.codec it keeps
no metadata: training and benchmarks want pixels only.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")


def to_tensor(arr: np.ndarray) -> torch.Tensor:
    """(3, H, W) uint8 tensor from an HxW, HxWx3 or HxWx4 uint8/bool/float array."""
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    elif arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return torch.from_numpy(np.array(arr[..., :3], copy=True)).permute(2, 0, 1).contiguous()


def read_image(path: Path) -> torch.Tensor:
    """(3, H, W) uint8 RGB tensor of an image file."""
    from PIL import Image

    with Image.open(path) as img:
        return to_tensor(np.asarray(img.convert("RGB")))


def decode_image(data: bytes) -> torch.Tensor:
    """(3, H, W) uint8 RGB tensor of encoded image bytes; PIL's error if they are not an image."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return to_tensor(np.asarray(img.convert("RGB")))


def list_images(folder: Path) -> list[Path]:
    """Image files under `folder` (recursive), sorted for a stable order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"HR image folder {folder} does not exist: give a folder of images or an "
                                "s3:// prefix (object-store prefixes need the Ray launcher, not --no-ray)")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
