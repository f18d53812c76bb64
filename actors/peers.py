"""The upscalers archives use today, run in the model actor's place: a `spandrel` checkpoint or a command line.

Each peer is a model-like object (`upscale`, `device`, `model_id`, `token_period_px`) that an
UpscaleActor subclass loads instead of the op4ksr model, so a peer's images go through the same
forward timing, quality report, encode + upload, report records and cost ledger
(actors/upscaler.py). A peer upscales by its own native factor; an output of another size (the
size policy's plan) is resized to it with the antialiased bicubic of the quality report.
"""
from __future__ import annotations

import enum
import hashlib
import os
import shlex
import string
import sys
import types
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from actors.peer_process import run_contained
from actors.upscaler import UpscaleActor
from op4ksr.errors import UserError
from op4ksr.inference.tiling import upscale_tiled
from op4ksr.imageops import bicubic_resize
from pipeline.fleet.spec import ModelSource, PeerSpec

# Peers have no token grid: their ap_excess is measured at the F16 op4ksr model's token period
# (32 output px), where op4ksr's own artifacts would be, so the two read on one scale; a tiled
# peer is measured at its tile stride instead, where its seams repeat.
PEER_PERIOD_PX = 32
STDERR_TAIL_CHARS = 400
# a command's output may differ from input x scale by this much per side (tools that pad to a multiple of
# 4 or 8, or round odd sizes); anything further is another image, refused before it is decoded
NATIVE_SIZE_TOLERANCE = 0.02
NATIVE_SIZE_SLACK_PX = 8


class PeerError(UserError):
    """A peer upscaler that cannot run as configured (peer.*)."""


class CommandFailed(RuntimeError):
    """The command exited non-zero, timed out or wrote no readable image: that input fails."""


def peer_model_id(peer: PeerSpec) -> str:
    """The peer's model id, without running it: spandrel:<file name>@<sha256[:12] of the file>, or
    command:<program>@<sha256[:12] of the command line>; done checks compare it like an op4ksr model id."""
    return peer_kind(peer).model_id(peer)


def _spandrel_model_id(peer: PeerSpec) -> str:
    path = Path(peer.path)
    if path.suffix != ".safetensors" or not path.is_file():
        raise PeerError(f"peer.path={peer.path!r}: need an existing .safetensors checkpoint "
                        "(convert a .pth with safetensors.torch.save_file(torch.load(...)))")
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return f"spandrel:{path.stem}@{digest.hexdigest()[:12]}"


def _command_model_id(peer: PeerSpec) -> str:
    argv = _check_command(peer.command)
    return f"command:{Path(argv[0]).name}@{hashlib.sha256(peer.command.encode()).hexdigest()[:12]}"


PLACEHOLDERS = {"input": "/tmp/in.png", "output": "/tmp/out.png", "scale": 4}


def _check_command(command: str) -> list[str]:
    """The command's argv, checked on the driver before any run: it splits (shlex: quotes balance), names
    {input} and {output}, and every word formats with the three placeholders only (a literal brace is
    written {{ or }}); PeerError, one line, otherwise."""
    try:
        argv = shlex.split(command)
    except ValueError as err:
        raise PeerError(f"peer.command={command!r}: {err}; balance its quotes") from None
    fields = {f for word in argv for _, f, _, _ in _fields(word, command) if f is not None}
    unknown = sorted(f or "{}" for f in fields - set(PLACEHOLDERS))
    if unknown:
        raise PeerError(f"peer.command={command!r}: unknown placeholder(s) {', '.join(unknown)}; use {{input}}, "
                        "{output} and {scale}, and write a literal brace as {{ or }}")
    missing = [p for p in ("input", "output") if p not in fields]
    if not argv or missing:
        raise PeerError(f"peer.command={command!r} needs the placeholders {{input}} and {{output}} "
                        "(and {scale} if the program takes one)")
    for word in argv:  # a trial run of what each image does (a format spec that does not fit its value fails here)
        try:
            word.format(**PLACEHOLDERS)
        except (ValueError, KeyError, IndexError, AttributeError) as err:
            raise PeerError(f"peer.command={command!r}: {word!r} does not format ({err})") from None
    return argv


def _fields(word: str, command: str):
    try:
        return list(string.Formatter().parse(word))
    except ValueError as err:  # a single { or }
        raise PeerError(f"peer.command={command!r}: {err} in {word!r}; write a literal brace as {{{{ or }}}}") from None


class SpandrelModel:
    """A PyTorch SR checkpoint loaded by spandrel (ESRGAN, SwinIR, HAT, DAT, SPAN, ...), tiled as asked
    (with op4ksr.inference.tiling's loop: LR tiles blended linearly over their overlap)."""

    def __init__(self, peer: PeerSpec, device: str):
        from safetensors.torch import load_file

        spandrel = import_spandrel()

        self.model_id = peer_model_id(peer)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                                   else "cpu" if device == "auto" else device)
        try:
            self.descriptor = spandrel.ModelLoader(self.device).load_from_state_dict(load_file(peer.path))
        except spandrel.UnsupportedModelError as err:
            raise PeerError(f"peer.path={peer.path}: spandrel knows no architecture with these keys ({err})") from None
        if not isinstance(self.descriptor, spandrel.ImageModelDescriptor):
            raise PeerError(f"peer.path={peer.path}: a {self.descriptor.architecture.name} model, not an image upscaler")
        self.descriptor.eval()
        self.scale = self.descriptor.scale
        internal = self.descriptor.tiling == spandrel.ModelTiling.INTERNAL
        self.tile, self.overlap = (0, 0) if internal else (peer.tile, peer.tile_overlap)
        self.token_period_px = (self.tile - self.overlap) * self.scale if self.tile else PEER_PERIOD_PX

    @torch.inference_mode()
    def upscale(self, x_lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        outputs = []
        for image in x_lr.to(self.device):
            h, w = image.shape[-2:]
            native = (h * self.scale, w * self.scale)
            if self.tile and max(h, w) > self.tile:
                out = upscale_tiled(_TileModel(self), image[None], native, self.tile, self.overlap, self.device)
            else:
                out = self.descriptor(image[None])
            outputs.append(fit(out, size))
        return torch.cat(outputs)


class _TileModel:
    """The `model.upscale(tile, size)` the tile loop calls."""

    def __init__(self, peer: SpandrelModel):
        self.peer = peer

    def upscale(self, tile: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.peer.descriptor(tile)


def import_spandrel():
    """The spandrel module, importable without torchvision.

    spandrel imports torchvision's transforms for two of its architectures (LaMa, RestoreFormer;
    neither an upscaler). torchvision's PyPI wheels are CUDA builds: next to the CPU torch they
    fail to import, and an installed but broken torchvision breaks transformers' imports too, so
    a CPU install has spandrel without it (the Makefile). Then a stand-in for the three names
    those two architectures import is in place while spandrel imports, and is removed at once:
    those architectures fail when called, and nothing else sees a torchvision.
    """
    try:
        import spandrel
        return spandrel
    except ModuleNotFoundError as err:
        if err.name == "spandrel":
            raise PeerError("peer.kind=spandrel needs the spandrel package: pip install 'op4ksr[peers]' "
                            "(with a CUDA torch), or `pip install --no-deps spandrel==0.4.2 einops==0.8.2`") from None
        if err.name != "torchvision":
            raise
    for name in [n for n in sys.modules if n.split(".")[0] == "spandrel"]:
        del sys.modules[name]  # the failed import's half-made modules
    stand_in = {name: types.ModuleType(name) for name in ("torchvision", "torchvision.transforms",
                                                           "torchvision.transforms.functional")}
    functional = stand_in["torchvision.transforms.functional"]
    functional.InterpolationMode = enum.Enum("InterpolationMode", "NEAREST BILINEAR BICUBIC")
    functional.rotate = functional.normalize = _needs_torchvision
    sys.modules.update(stand_in)
    try:
        import spandrel
    finally:
        for name in stand_in:
            del sys.modules[name]
    return spandrel


def _needs_torchvision(*args, **kwargs):
    raise PeerError("this spandrel architecture needs torchvision, which is not installed")


class CommandModel:
    """Any command line with {input}, {output} and {scale}: one process per image (no shell), PNG in and out."""

    def __init__(self, peer: PeerSpec):
        self.model_id = peer_model_id(peer)
        self.argv = _check_command(peer.command)
        self.timeout_s = peer.timeout_s
        self.device = torch.device("cpu")  # where its outputs arrive; the program picks its own device
        self.token_period_px = PEER_PERIOD_PX

    def upscale(self, x_lr: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.cat([fit(self._run(image, size), size) for image in x_lr])

    def _run(self, image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        scale = max(1, round(size[0] / image.shape[-2]))
        with tempfile.TemporaryDirectory(prefix="op4ksr-peer-") as folder:
            source, target = os.path.join(folder, "input.png"), os.path.join(folder, "output.png")
            pixels = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            Image.fromarray(pixels).save(source, compress_level=1)
            argv = [a.format(input=source, output=target, scale=scale) for a in self.argv]
            try:
                status, stderr = run_contained(argv, self.timeout_s, os.path.join(folder, "stderr"))
            except OSError as err:
                raise CommandFailed(f"{self.argv[0]} could not start: {err}") from None
            tail = stderr[-STDERR_TAIL_CHARS:].strip()
            if status is None:
                raise CommandFailed(f"{self.argv[0]} took more than peer.timeout_s={self.timeout_s:g} s (it and its "
                                    "children were stopped)")
            if status != 0:
                raise CommandFailed(f"{self.argv[0]} exited {status}: {tail or '(no stderr)'}")
            native = (image.shape[-2] * scale, image.shape[-1] * scale)
            return _read_native(target, native, self.argv[0], tail)


def _read_native(path: str, native: tuple[int, int], program: str, tail: str) -> torch.Tensor:
    """The command's output (1, 3, H, W) in [0, 1], decoded only once its header says it is the input
    times its scale, within NATIVE_SIZE_TOLERANCE: a 1x1 or an 8000x8000 result fails its input."""
    try:
        with Image.open(path) as result:
            width, height = result.size  # the header only: nothing decoded yet
            if not _near(height, native[0]) or not _near(width, native[1]):
                raise CommandFailed(f"{program} wrote a {width}x{height} image for a {native[1]}x{native[0]} "
                                    f"output (the input times its scale, within {NATIVE_SIZE_TOLERANCE:.0%} or "
                                    f"{NATIVE_SIZE_SLACK_PX} px): not the upscale asked for")
            rgb = np.asarray(result.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise CommandFailed(f"{program} wrote no readable {path}: {err}; stderr: {tail}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255


def _near(side: int, expected: int) -> bool:
    return abs(side - expected) <= max(NATIVE_SIZE_SLACK_PX, NATIVE_SIZE_TOLERANCE * expected)


def fit(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A peer's native output at the planned output size (antialiased bicubic when they differ)."""
    return x if tuple(x.shape[-2:]) == tuple(size) else bicubic_resize(x, size).clamp(0, 1)


@dataclass(frozen=True)
class PeerKind:
    """What differs between the kinds of peer (peer.kind): everything else is the model actor's."""

    model_id: Callable[[PeerSpec], str]  # peer_model_id, without loading the peer
    load: Callable[[PeerSpec, str], object]  # (peer, model.device) -> the model-like object
    one_image_per_forward: bool  # a command that fails fails its own input only
    warms_up: bool  # False: a process per image, nothing stays warm between images


PEER_KINDS = {
    "spandrel": PeerKind(_spandrel_model_id, SpandrelModel, one_image_per_forward=False, warms_up=True),
    "command": PeerKind(_command_model_id, lambda peer, device: CommandModel(peer), one_image_per_forward=True,
                        warms_up=False),
}


def peer_kind(peer: PeerSpec) -> PeerKind:
    """The one place peer.kind is read."""
    if peer.kind not in PEER_KINDS:
        raise PeerError(f"peer.kind={peer.kind!r}: use {' or '.join(PEER_KINDS)} (empty: the op4ksr model)")
    return PEER_KINDS[peer.kind]


class PeerActor(UpscaleActor):
    """The model actor running a peer (peer.* set) in the op4ksr model's place, as its kind says."""

    def load_model(self, model: ModelSource):
        self.kind = peer_kind(model.peer)
        return self.kind.load(model.peer, model.spec.device)

    def _warm_up(self, shapes) -> float:
        return super()._warm_up(shapes) if self.kind.warms_up else 0.0

    def _run_group(self, group: list[dict], size: tuple[int, int]) -> list:
        if not self.kind.one_image_per_forward:
            return super()._run_group(group, size)
        futures = []
        for record in group:
            futures += super()._run_group([record], size)
        return futures


def load_peer(peer: PeerSpec, device: str):
    """The peer as a model object (`op4ksr eval` scores it like the op4ksr model)."""
    return peer_kind(peer).load(peer, device)


def model_stage(model: ModelSource):
    """The actor class for a model source: the op4ksr UpscaleActor, or the peer's."""
    return UpscaleActor if model.peer is None else PeerActor
