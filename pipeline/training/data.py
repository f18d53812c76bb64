"""The HR stream of a training run: the images under train.data (an s3:// prefix or a folder) read
with Ray Data, cut into random crops and degraded on CPU workers, streamed to the trainers.

Nothing is copied whole to local disk: each draw fetches its image's bytes, decodes, crops and
degrades in a Ray Data task, and only the crop (uint8) and its LR (float32) travel to a trainer.
Which image each draw uses, and its crop and degradation, depend only on (train.seed, draw
number). A broken or too small image is not an error: its draws come out marked `ok=False`, the
trainers skip them and count them in the metrics (`skipped_inputs`).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from op4ksr.errors import UserError
from op4ksr.images.folders import IMAGE_EXTENSIONS, decode_image
from op4ksr.training.config import TrainConfig
from op4ksr.training.data import crop_draw
from pipeline.storage import Storage, StorageError, StorageSpec

_OPEN: dict[StorageSpec, Storage] = {}  # one client per process and storage


def list_hr_images(spec: StorageSpec) -> list[str]:
    """The image keys under the prefix; ValueError naming it when there is none (before any worker starts)."""
    keys = [o.key for o in spec.open().iter_objects(extensions=IMAGE_EXTENSIONS)]
    if not keys:
        raise UserError(f"train.data={spec.uri} holds no image ({' '.join(IMAGE_EXTENSIONS)}): "
                         "check the prefix (and storage.endpoint_url), or upload the HR images there")
    return keys


def draw_key(keys: list[str], seed: int, draw: int) -> str:
    """The image of draw number `draw`: uniform over keys, from a generator seeded by (seed, draw)."""
    return keys[int(np.random.default_rng([seed, draw]).integers(len(keys)))]


def cut_batch(batch: dict[str, np.ndarray], keys: list[str], spec: StorageSpec, cfg: dict) -> dict[str, np.ndarray]:
    """Ray Data map_batches function: draw numbers {"id"} -> {"ok", "key", "hr", "lr"}."""
    config = TrainConfig.from_dict(cfg)
    batch = {"draw": batch["id"], "key": [draw_key(keys, config.seed, int(d)) for d in batch["id"]]}
    storage = _OPEN.get(spec) or _OPEN.setdefault(spec, spec.open())
    c, s = config.crop, config.crop // config.scale
    hr = np.zeros((len(batch["draw"]), 3, c, c), np.uint8)
    lr = np.zeros((len(batch["draw"]), 3, s, s), np.float32)
    ok = np.zeros(len(batch["draw"]), bool)
    for i, (draw, key) in enumerate(zip(batch["draw"], batch["key"])):
        try:
            img = decode_image(storage.get(str(key)))  # (3, H, W) uint8
        except (OSError, ValueError, StorageError) as err:  # PIL's errors are OSError / ValueError
            print(f"train.data: skipping {storage.uri_for(str(key))}: {type(err).__name__}: {err}", flush=True)
            continue
        if min(img.shape[-2:]) < c:
            print(f"train.data: skipping {storage.uri_for(str(key))}: {img.shape[2]}x{img.shape[1]} px is "
                  f"smaller than the {c} px crop", flush=True)
            continue
        crop, small = crop_draw(img, config, config.seed, int(draw))
        hr[i], lr[i], ok[i] = crop.numpy(), small.numpy(), True
    return {"ok": ok, "key": np.asarray(batch["key"], dtype=object), "hr": hr, "lr": lr}


def build_stream(keys: list[str], spec: StorageSpec, cfg: TrainConfig, first_draw: int, count: int,
                 num_cpus: float = 0.5):
    """The Ray Data dataset of draws first_draw .. first_draw + count - 1 (lazy: blocks are cut as
    the trainers consume them, so a generous `count` costs nothing)."""
    import ray.data

    ds = ray.data.range(count, override_num_blocks=max(1, min(count // cfg.batch_size, 200)))
    ds = ds.map_batches(lambda b: {"id": b["id"] + first_draw}, batch_format="numpy")
    return ds.map_batches(cut_batch, fn_kwargs={"keys": keys, "spec": spec, "cfg": cfg.as_dict()},
                          batch_size=cfg.batch_size, batch_format="numpy", num_cpus=num_cpus)


def shard_batches(rows: Iterator[dict], batch_size: int):
    """The loop's `batches` hook over this trainer's dataset shard: `batch_size` good draws per step
    (hr as float in [0, 1]) and the running count of skipped ones."""
    skipped = 0

    def good():
        nonlocal skipped
        for batch in rows:
            for ok, hr, lr in zip(batch["ok"], batch["hr"], batch["lr"]):
                if ok:
                    yield hr, lr
                else:
                    skipped += 1

    stream = good()

    def next_batch(step: int):
        pairs = []
        for _ in range(batch_size):
            pair = next(stream, None)
            if pair is None:
                raise RuntimeError(f"the HR stream ran out at step {step + 1}: too many inputs were skipped "
                                   f"({skipped}); fix or remove the broken images under train.data")
            pairs.append(pair)
        hr = torch.stack([torch.from_numpy(np.asarray(h)) for h, _ in pairs]).float() / 255
        lr = torch.stack([torch.from_numpy(np.asarray(small)) for _, small in pairs])
        return hr, lr, {"skipped_inputs": skipped}

    return next_batch
