"""Object-store prefixes copied to a local folder, for the library code that reads only local files."""
from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import replace
from typing import Callable

from op4ksr.errors import UserError
from op4ksr.loading import ModelSpec, load_model
from pipeline.storage import StorageSpec
from pipeline.storage.scratch import scratch


def load_materialised(model: ModelSpec, storage: StorageSpec | None):
    """The model `model` names, through the one loader (op4ksr.loading.load_model). An object-store
    model (`storage`) is copied to a scratch folder first, and the copy is removed as soon as the
    weights are loaded (pipeline/storage/scratch.py removes it later if this process is killed first).
    With model.offload=blocks the blocks are read from the copy at every forward, so it stays until
    the process exits."""
    if storage is None:
        return load_model(model)
    if model.offload == "blocks":
        stack = contextlib.ExitStack()
        folder = stack.enter_context(scratch("model"))
        atexit.register(stack.close)
        return load_model(replace(model, source=materialise_checkpoint(storage, str(folder))))
    with scratch("model") as folder:
        return load_model(replace(model, source=materialise_checkpoint(storage, str(folder))))


def materialise_checkpoint(spec: StorageSpec, into: str, keep: Callable[[str], bool] | None = None) -> str:
    """`into`, a local folder, now holding a copy of the objects under the prefix (those `keep`s)."""
    storage = spec.open()
    found = False
    for obj in storage.iter_objects():
        if keep is not None and not keep(obj.key):
            continue
        target = os.path.join(into, *obj.key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.get_file(obj.key, target)
        found = True
    if not found:
        raise UserError(f"{spec.uri}: no objects under this prefix; check the uri")
    return into
