"""Object-store prefixes copied to a local folder, for the library code that reads only local files."""
from __future__ import annotations

import os
import tempfile
from typing import Callable

from op4ksr.errors import UserError
from pipeline.storage import StorageSpec


def materialise_checkpoint(spec: StorageSpec, into: str | None = None, keep: Callable[[str], bool] | None = None) -> str:
    """A local folder (`into`, else a new temp folder) holding a copy of the objects under the prefix (those `keep`s)."""
    storage = spec.open()
    local = into or tempfile.mkdtemp(prefix="op4ksr-model-")
    found = False
    for obj in storage.iter_objects():
        if keep is not None and not keep(obj.key):
            continue
        target = os.path.join(local, *obj.key.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.get_file(obj.key, target)
        found = True
    if not found:
        raise UserError(f"{spec.uri}: no objects under this prefix; check the uri")
    return local
