"""Optional packages: imported only where a command needs them, with a one-line error naming the extra.

A backfill needs none of them (the runtime image installs only pyproject.toml's `dependencies`);
`pip install 'op4ksr[EXTRA]'` (or `make test` / `make demo`, which install theirs) adds them:
  import  transformers   op4ksr import: the text encoders that encode the fixed prompt once
  train   peft, scikit-image   op4ksr train: LoRA adapters; the offline:train textures
  eval    scikit-image   op4ksr eval / bench-build: SSIM, the benchmark's photos
  demo    moto, scikit-image   the embedded S3 server (storage.embedded), the demo's sample images
  video   av, opencv-python, OpenEXR   op4ksr video: decoding and writing video (PyAV), the warping error's optical
          flow, OpenEXR frames
  evidence  opencv-python   the report's faces and text detector (op4ksr/quality/evidence.py); without it,
          under report.faces/text_check=auto, those fields are null with the reason (Tesseract is a Debian package)
"""
from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from op4ksr.errors import UserError


class MissingExtraError(UserError):
    """An optional package a command needs is not installed; the message names the extra that brings it."""


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """`import module`, or MissingExtraError naming `extra` if its top-level package is not installed."""
    check_installed(module, extra, purpose)
    return importlib.import_module(module)


def check_installed(module: str, extra: str, purpose: str) -> None:
    """MissingExtraError naming `extra` if `module`'s top-level package is not installed (imports nothing)."""
    top = module.split(".", 1)[0]
    if importlib.util.find_spec(top) is None:
        raise MissingExtraError(f"{purpose} needs the package '{top}', which is not installed: "
                                f"pip install 'op4ksr[{extra}]' (or .[{extra}] in a checkout)")
