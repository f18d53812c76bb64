"""Training batches: random HR crops from a folder (or the offline set), degraded on the fly to LR.

Every draw (image, crop position, flips, degradation) comes from one torch.Generator whose
state is part of the train state, so a resumed run sees exactly the batches it would have.
Images are read from a local folder here; pipeline/training/launch.py streams them from an object-store
prefix with Ray Data instead, using `crop_and_degrade` on CPU workers.
"""
from __future__ import annotations

from pathlib import Path

import torch

from op4ksr.images.degrade import DegradeConfig, degrade
from op4ksr.images.folders import list_images, read_image, to_tensor


class HRImages:
    """The HR images of a training run: a local folder, or `offline:<split>` (op4ksr.evaluation.benchset)."""

    def __init__(self, source: str, min_side: int, cache: bool = True):
        self._cache: dict[int, torch.Tensor] = {}
        self._keep = cache
        if source.startswith("offline:"):
            from op4ksr.evaluation.benchset import offline_images

            named = offline_images(source.split(":", 1)[1])
            self._items: list = [img for _, img in named]
            self.names = [name for name, _ in named]
        else:
            self._items = list_images(Path(source))
            self.names = [str(p) for p in self._items]
        sizes = [self._size(i) for i in range(len(self._items))]
        keep = [i for i, (h, w) in enumerate(sizes) if min(h, w) >= min_side]
        if not keep:
            raise ValueError(f"{source}: no image with both sides >= the crop size {min_side} px "
                             f"({len(self._items)} image(s) found)")
        self._items = [self._items[i] for i in keep]
        self.names = [self.names[i] for i in keep]

    def _size(self, i: int) -> tuple[int, int]:
        item = self._items[i]
        if isinstance(item, Path):
            from PIL import Image

            with Image.open(item) as img:
                return img.height, img.width
        return tuple(item.shape[:2])

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self._cache:
            return self._cache[i]
        item = self._items[i]
        img = read_image(item) if isinstance(item, Path) else to_tensor(item)
        if self._keep:
            self._cache[i] = img
        return img


def random_crop(img: torch.Tensor, size: int, g: torch.Generator, augment: bool) -> torch.Tensor:
    """(3, size, size) uint8 crop of img (3, H, W) at a random place, randomly flipped/rotated."""
    _, h, w = img.shape
    top = int(torch.randint(0, h - size + 1, (), generator=g))
    left = int(torch.randint(0, w - size + 1, (), generator=g))
    crop = img[:, top : top + size, left : left + size]
    if augment:
        if bool(torch.rand((), generator=g) < 0.5):
            crop = crop.flip(-1)
        crop = torch.rot90(crop, int(torch.randint(0, 4, (), generator=g)), dims=(-2, -1))
    return crop


def sample_batch(images: HRImages, batch_size: int, crop: int, degrade_cfg: DegradeConfig, g: torch.Generator,
                 augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hr (B, 3, crop, crop), x_lr (B, 3, crop/scale, crop/scale)), float32 in [0, 1] on the CPU."""
    idx = torch.randint(0, len(images), (batch_size,), generator=g).tolist()
    hr = torch.stack([random_crop(images[i], crop, g, augment) for i in idx]).float() / 255
    return hr, degrade(hr, degrade_cfg, g)


def crop_draw(img: torch.Tensor, cfg, seed: int, draw: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hr (3, crop, crop) uint8, lr (3, crop/scale, crop/scale) float32 in [0, 1]) of draw number
    `draw` from img (3, H, W) uint8: crop place, flips and degradation depend only on (seed, draw),
    so a streamed run is reproducible whichever CPU worker cuts which draw."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + draw)
    hr = random_crop(img, cfg.crop, g, cfg.augment)
    lr = degrade(hr[None].float() / 255, cfg.degrade, g)[0]
    return hr.contiguous(), lr
