"""Offline HR images and synthetic SR benchmarks built from them, deterministically.

`offline_images(split)` gives images that need no network: scikit-image's bundled photographs
and generated textures (smooth fields, gratings and checks at many periods, edges, 1/f noise).
The `heldout` split shares no source photo with `train`. `build_bench` cuts HR crops, degrades
them to LR with op4ksr.images.degrade and writes:

```
<out>/hr/<name>.png  <out>/lr/<name>.png  <out>/manifest.json
```
The manifest records the scale, seed, degradation options and, per item, its source, crop box
and the sha256 of both PNGs, so a rebuild can be checked byte for byte.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from op4ksr.images.degrade import DegradeConfig, degrade
from op4ksr.errors import UserError
from op4ksr.images.folders import list_images, read_image, to_tensor

MANIFEST = "manifest.json"
# scikit-image photos bundled with the package (no download); `cat` duplicates `chelsea`
TRAIN_PHOTOS = ("astronaut", "hubble_deep_field", "immunohistochemistry", "retina", "stereo_motorcycle", "brick",
                "grass", "gravel", "moon", "clock", "coins", "cell", "page", "text", "colorwheel")
HELDOUT_PHOTOS = ("coffee", "rocket", "chelsea", "camera")
TEXTURES_PER_SPLIT = {"train": 24, "heldout": 4}
TEXTURE_SIZE = 384


def _photo(name: str) -> np.ndarray:
    from op4ksr.extras import require

    img = getattr(require("skimage.data", "eval", "scikit-image's sample photos (bench-build, offline:train)"), name)()
    if name == "stereo_motorcycle":
        img = img[0]  # the left view only: the right one is nearly the same picture
    return img


def _smooth_field(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal((size, size, 3)), sigma=(sigma, sigma, 0), mode="wrap")
    return (f - f.min()) / max(1e-8, np.ptp(f))


def texture(kind: str, seed: int, size: int = TEXTURE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 generated texture of `kind` (field, grating, checks, shapes, pink)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    base = _smooth_field(rng, size, size / 8)
    if kind == "field":
        img = 0.3 + 0.7 * _smooth_field(rng, size, rng.uniform(2, 12))
    elif kind in ("grating", "checks"):
        period, theta = rng.uniform(6, 70), rng.uniform(0, np.pi)
        u = (np.cos(theta) * xx + np.sin(theta) * yy) * 2 * np.pi / period
        v = (-np.sin(theta) * xx + np.cos(theta) * yy) * 2 * np.pi / period
        wave = np.sin(u) if kind == "grating" else np.sign(np.sin(u) * np.sin(v)) * 0.8
        img = base * 0.6 + 0.2 + 0.2 * wave[..., None] * rng.uniform(0.4, 1.0, size=3)
    elif kind == "shapes":
        img = base * 0.5 + 0.25
        for _ in range(rng.integers(8, 25)):
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(8, size / 5)]
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) if rng.random() < 0.5 else \
                ((np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * rng.uniform(0.3, 1.5)))
            img[mask] = rng.uniform(0, 1, size=3)
    elif kind == "pink":
        freq = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
        spec = (rng.standard_normal((size, size, 3)) + 1j * rng.standard_normal((size, size, 3)))
        f = np.fft.ifft2(spec / np.maximum(freq, 1 / size)[..., None], axes=(0, 1)).real
        img = (f - f.min()) / max(1e-8, np.ptp(f))
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


TEXTURE_KINDS = ("field", "grating", "checks", "shapes", "pink")


def offline_images(split: str) -> list[tuple[str, np.ndarray]]:
    """[(name, HxW[x3] uint8 array)] of the `train` or `heldout` split; no network needed."""
    if split not in TEXTURES_PER_SPLIT:
        raise UserError(f"unknown offline split {split!r}; choose train or heldout")
    photos = TRAIN_PHOTOS if split == "train" else HELDOUT_PHOTOS
    out = [(name, _photo(name)) for name in photos]
    offset = 0 if split == "train" else 10_000  # disjoint texture seeds
    for i in range(TEXTURES_PER_SPLIT[split]):
        kind = TEXTURE_KINDS[i % len(TEXTURE_KINDS)]
        out.append((f"texture-{kind}-{offset + i}", texture(kind, offset + i)))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _crop_boxes(h: int, w: int, size: tuple[int, int] | None, count: int, scale: int,
                rng: torch.Generator) -> list[tuple[int, int, int, int]]:
    if size is None:
        return [(0, 0, h - h % scale, w - w % scale)]
    ch, cw = size
    if ch > h or cw > w:
        return []
    if count == 1:  # the centre: the most recognisable view of a photo
        return [((h - ch) // 2, (w - cw) // 2, ch, cw)]
    return [(int(torch.randint(0, h - ch + 1, (), generator=rng)), int(torch.randint(0, w - cw + 1, (), generator=rng)),
             ch, cw) for _ in range(count)]


def build_bench(images: list[tuple[str, np.ndarray]], out: Path, degrade_cfg: DegradeConfig,
                hr_size: tuple[int, int] | None = (256, 256), crops_per_image: int = 1, seed: int = 0,
                source: str = "") -> dict:
    """Write the benchmark folder and return its manifest; the same inputs give the same bytes."""
    from PIL import Image

    scale = degrade_cfg.scale
    if hr_size is not None and (hr_size[0] % scale or hr_size[1] % scale):
        raise UserError(f"bench HR size {hr_size} must be a multiple of the scale {scale}")
    (out / "hr").mkdir(parents=True, exist_ok=True)
    (out / "lr").mkdir(parents=True, exist_ok=True)
    items = []
    for index, (name, array) in enumerate(images):
        hr_full = to_tensor(array)  # (3, H, W) uint8
        crop_rng = torch.Generator().manual_seed(seed * 1_000_003 + index)
        for j, (top, left, h, w) in enumerate(_crop_boxes(*hr_full.shape[-2:], hr_size, crops_per_image, scale,
                                                         crop_rng)):
            key = f"{Path(name).with_suffix('').as_posix().replace('/', '__')}-{j}"
            hr = hr_full[:, top : top + h, left : left + w].float()[None] / 255
            g = torch.Generator().manual_seed(seed * 1_000_003 + 7919 * index + j)
            lr = degrade(hr, degrade_cfg, g)
            for folder, img in (("hr", hr), ("lr", lr)):
                arr = (img[0].permute(1, 2, 0) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(arr).save(out / folder / f"{key}.png", compress_level=6)
            items.append({"name": key, "source": name, "crop": [top, left, h, w], "hr": f"hr/{key}.png",
                          "lr": f"lr/{key}.png", "hr_size": [h, w], "lr_size": list(lr.shape[-2:]),
                          "hr_sha256": _sha256(out / "hr" / f"{key}.png"),
                          "lr_sha256": _sha256(out / "lr" / f"{key}.png")})
    if not items:
        raise UserError(f"no image in {source or 'the input'} is at least {hr_size} px; lower bench.hr_size")
    manifest = {"scale": scale, "seed": seed, "source": source, "hr_size": list(hr_size) if hr_size else None,
                "crops_per_image": crops_per_image, "degrade": degrade_cfg.as_dict(), "items": items}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def load_images(source: str) -> list[tuple[str, np.ndarray]]:
    """[(name, array)] from a local folder or `offline:<split>`."""
    if source.startswith("offline:"):
        return offline_images(source.split(":", 1)[1])
    folder = Path(source)
    return [(str(p.relative_to(folder)), read_image(p).permute(1, 2, 0).numpy()) for p in list_images(folder)]


def read_manifest(bench: Path) -> dict:
    path = bench / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{bench}: {MANIFEST} is missing; build the benchmark with `op4ksr bench-build`")
    return json.loads(path.read_text())
