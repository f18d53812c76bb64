"""The image files of a folder (the one walker of image folders), and plain RGB uint8 tensors of them.

Every command that takes a folder of images walks it here: `op4ksr upscale` (op4ksr.inference.local_files),
`op4ksr calibrate` (op4ksr.evaluation.calibration_files), training data (op4ksr.training.data) and
benchmark building (op4ksr.evaluation.benchset). The tensors keep no metadata (training and
benchmarks want pixels only); op4ksr.images.codec decodes what an archive keeps.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

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
    return decode_image(Path(path).read_bytes())


def decode_image(data: bytes) -> torch.Tensor:
    """(3, H, W) uint8 RGB tensor of encoded image bytes; PIL's error if they are not an image."""
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return to_tensor(np.asarray(img.convert("RGB")))


def image_files(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """The files under `folder` (recursive) whose extension is one of `extensions` (any case), sorted."""
    wanted = {e.lower() for e in extensions}
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in wanted and p.is_file())


def list_images(folder: Path) -> list[Path]:
    """Image files under the HR image folder `folder` (recursive), sorted; FileNotFoundError if it is no folder."""
    if not folder.is_dir():
        raise FileNotFoundError(f"HR image folder {folder} does not exist: give a folder of images or an "
                                "s3:// prefix (object-store prefixes need the Ray launcher, not --no-ray)")
    return image_files(folder)
