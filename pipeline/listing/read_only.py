"""Inputs are read-only: where a run may write, and which keys of its input it must never list.

A run writes only under its output location (images/, reports/, runs/, and for `op4ksr compare`
variants/ and compare/). So it never writes an input's key when:
- the output location is not the input location (refused: InputsAreReadOnly, exit status 1);
- the input location is not inside one of the areas it writes (output.uri=X, input.uri=X/images/);
- an output location inside the input location is left out of the listing, so a rerun never
  reads its own outputs (or its run folders) back as inputs.
Local folders are compared by their real paths, so a symlink or `./` names the same folder; S3
prefixes by bucket and prefix (input and output share storage.endpoint_url).
"""
from __future__ import annotations

import os
from typing import Iterable

from op4ksr.errors import InputsAreReadOnly
from pipeline.storage import normalise_uri

# what a run (or a comparison) writes directly under its output location
WRITTEN_AREAS = ("images/", "reports/", "runs/", "variants/", "compare/")


def location(uri: str) -> str:
    """`uri` as one comparable string ending in '/': s3://bucket/prefix/, or a local folder's real path."""
    uri = normalise_uri(uri)
    if uri.startswith("s3://"):
        return uri
    return os.path.realpath(uri).rstrip(os.sep) + "/"


def _inside(child: str, parent: str) -> str | None:
    """`child` relative to `parent` ('' when equal; both from `location`), or None if not inside it."""
    return child[len(parent):] if child.startswith(parent) else None


def check_output_apart(input_uri: str, output_uri: str, output_key: str = "output.uri") -> None:
    """InputsAreReadOnly, before anything is written, when writing under `output_uri` could touch an input."""
    source, target = location(input_uri), location(output_uri)
    if source == target:
        raise InputsAreReadOnly(f"{output_key}={output_uri} is the input location input.uri={input_uri}: op4ksr "
                                "never writes where its inputs are; nothing was written. Give an output "
                                f"{output_key} apart from the input (e.g. a sibling folder or prefix)")
    below = _inside(source, target)
    if below is not None and below.startswith(WRITTEN_AREAS):
        raise InputsAreReadOnly(f"input.uri={input_uri} is inside {below.split('/')[0]}/ of {output_key}={output_uri}, "
                                "where op4ksr writes: its inputs would be overwritten; nothing was written. "
                                "Give another output location")


def excluded_prefixes(input_uri: str, output_uris: Iterable[str]) -> tuple[str, ...]:
    """The key prefixes of the input location that are outputs (each output location inside it)."""
    source = location(input_uri)
    out = []
    for uri in output_uris:
        below = _inside(location(uri), source)
        if below:  # '' (the same location) is refused by check_output_apart
            out.append(below)
    return tuple(out)


def without_prefixes(objects, prefixes: tuple[str, ...]):
    """`objects` (ObjectInfo) whose key starts with none of `prefixes`."""
    if not prefixes:
        return objects
    return (obj for obj in objects if not obj.key.startswith(prefixes))
